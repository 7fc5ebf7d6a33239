"""Validated field types shared by the payload schemas."""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, StringConstraints

from crm.errors import ApplicationError
from crm.normalise import email_normalise, phone_normalise

_IDENTIFIER = re.compile(r"^[^\s\x00-\x1f\x7f]{1,128}$")
# A timestamp further ahead than this is a producer bug; accepting it would let one
# event pin a consent decision forever under last-writer-wins.
MAX_CLOCK_SKEW = timedelta(hours=24)
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)


def _identifier(value: object) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ValueError("must be a string of 1 to 128 characters without spaces or control characters")
    return value


def normalise_email(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not value.strip():
        raise ValueError("must not be empty")
    try:
        return email_normalise(value)
    except ApplicationError as exc:
        raise ValueError(exc.message) from None


def normalise_phone(value: object) -> str:
    if not isinstance(value, str) or len(value) > 32:
        raise ValueError("must be a string of at most 32 characters")
    if not value.strip():
        raise ValueError("must not be empty")
    try:
        return phone_normalise(value)
    except ApplicationError as exc:
        raise ValueError(exc.message) from None


def parse_timestamp(value: object) -> datetime:
    """ISO 8601 with a time zone, between 2000 and a day from now."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (for example a trailing Z)")
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 lies before the calendar in UTC
        raise ValueError("is outside the calendar once converted to UTC") from None
    return check_timestamp_range(in_utc)


def check_timestamp_range(value: datetime) -> datetime:
    if value < EARLIEST_TIMESTAMP:
        raise ValueError("is before 2000-01-01")
    if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError("is more than 24 hours in the future")
    return value


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; JSON can, so the producer may send it.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Identifier = Annotated[str, BeforeValidator(_identifier)]
Email = Annotated[str, BeforeValidator(normalise_email)]
Phone = Annotated[str, BeforeValidator(normalise_phone)]
Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_no_nul)]
ShortText = Annotated[str, StringConstraints(max_length=500), AfterValidator(_no_nul)]
LongText = Annotated[str, StringConstraints(max_length=4000), AfterValidator(_no_nul)]
Url = Annotated[str, StringConstraints(max_length=4000), AfterValidator(lambda v: _no_nul(v.strip()))]
