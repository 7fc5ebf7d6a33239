"""One definition of "looks like an email address or a phone number", for what leaves through logs and Sentry.

Exception messages and failure reasons can quote the data that broke them; those texts pass through
`redact` before they are logged or reported. It errs on the side of hiding: any run of seven or more
digits (with the separators phone numbers use) is hidden, so it is applied to free text only, never to ids.
"""

import re

EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return PHONE.sub(REDACTED, EMAIL.sub(REDACTED, text))
