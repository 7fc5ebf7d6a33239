"""How the CRM stores addresses: one definition, used by the contract, the services and the admin.

Pure functions with no model imports, so the event contract can validate with them anywhere.
"""

import re

import phonenumbers
from django.conf import settings
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from crm.errors import ApplicationError

# The addresses `validate_email` is certain to accept, recognised in one regular expression: a
# lower-case ASCII dot-atom before the @ (RFC 5322 atext), ASCII hostname labels of 1 to 63
# characters after it, the last ending in a letter. The caller also requires at most 254 characters,
# no "--" (Punycode and its look-alikes need IDNA) and no special-use domain.
_ATEXT = r"[a-z0-9_!#$%&'*+/=?^`{|}~-]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_EMAIL = re.compile(
    rf"{_ATEXT}+(?:\.{_ATEXT}+)*@(?P<domain>(?:{_LABEL}\.)+(?:[a-z0-9][a-z0-9-]{{0,61}})?[a-z])\Z"
)
_SPECIAL_USE_SUFFIXES = tuple(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)
EMAIL_MAX_LENGTH = 254


def _plainly_valid_email(candidate: str) -> bool:
    """True only for an address `validate_email` accepts as it is. False means "ask it", not
    "invalid": quoting, Unicode, IDNA, special-use names and lengths near the limits all go through
    the full check. It spares the backfill most of its validation time (two thirds of a row's was
    `validate_email`); tests/crm/test_normalise_email_fast_path.py proves both give the same answers."""
    match = _PLAIN_EMAIL.match(candidate)
    if match is None or len(candidate) > EMAIL_MAX_LENGTH:
        return False
    domain = match["domain"]
    return "--" not in domain and not f".{domain}".endswith(_SPECIAL_USE_SUFFIXES)


def email_normalise(value: str | None) -> str:
    """Trimmed and lower-cased; "" for none. Raises ApplicationError when the syntax is invalid."""
    candidate = (value or "").strip().lower()
    if not candidate:
        return ""
    if _plainly_valid_email(candidate):
        return candidate
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
