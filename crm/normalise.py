"""How the CRM stores addresses: one definition, used by the contract, the services and the admin.

Pure functions with no model imports, so the event contract can validate with them anywhere.
"""

import phonenumbers
from django.conf import settings
from email_validator import EmailNotValidError, validate_email

from crm.errors import ApplicationError


def email_normalise(value: str | None) -> str:
    """Trimmed and lower-cased; "" for none. Raises ApplicationError when the syntax is invalid."""
    candidate = (value or "").strip().lower()
    if not candidate:
        return ""
    try:
        validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ApplicationError(f"is not a valid email address ({exc})") from None
    return candidate


def phone_normalise(value: str | None) -> str:
    """E.164 with the default region from settings; "" for none. Raises ApplicationError when invalid."""
    candidate = (value or "").strip()
    if not candidate:
        return ""
    try:
        number = phonenumbers.parse(candidate, settings.PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise ApplicationError(f"is not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(number):
        raise ApplicationError("is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
