"""Validated field types shared by the payload schemas.

Partial acceptance: a field typed `Droppable[...]` is optional, and an invalid value there is dropped
(read as absent) with a `FieldWarning` instead of rejecting the event, and a timestamp without a zone is
read as UTC with a warning. Both happen only when the caller collects warnings (`schemas.payload_parse`
passes a collector in pydantic's validation context); without one, as in `Model.model_validate(data)`,
the same values are refused, so strict callers (the contact backfill) keep judging a row whole.
"""

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, StringConstraints, ValidationError, ValidationInfo, WrapValidator

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


def _iso_datetime(value: object) -> datetime:
    """An ISO 8601 string as a datetime, naive when it states no zone."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("must be an ISO 8601 timestamp string")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 timestamp") from None


def _in_utc(parsed: datetime) -> datetime:
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 lies before the calendar in UTC
        raise ValueError("is outside the calendar once converted to UTC") from None
    return check_timestamp_range(in_utc)


def parse_timestamp(value: object) -> datetime:
    """ISO 8601 with a time zone, between 2000 and a day from now."""
    parsed = _iso_datetime(value)
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (for example a trailing Z)")
    return _in_utc(parsed)


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


# -- partial acceptance -----------------------------------------------------------------------

WARNINGS_CONTEXT_KEY = "field_warnings"
SUMMARY_CHARS = 40
_JSON_TYPES = {bool: "boolean", int: "number", float: "number", dict: "object", list: "array"}


@dataclass(frozen=True)
class FieldWarning:
    """A value the contract did not take as sent; the event applied without it (or reinterpreted)."""

    field: str  # where, as in rejection reasons: "payload.phoneNumber"
    problem: str
    value: str  # a short summary of what was sent, never the whole value

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def value_summary(value: object) -> str:
    """At most SUMMARY_CHARS characters of a JSON value, as ASCII JSON, with its length when cut."""
    if isinstance(value, str):
        if not value:
            return "empty string"
        head = json.dumps(value[:SUMMARY_CHARS])
        return head if len(value) <= SUMMARY_CHARS else f"{head}... ({len(value)} characters)"
    try:
        text = json.dumps(value, default=repr)
    except (ValueError, TypeError, RecursionError):
        text = "..."
    kind = _JSON_TYPES.get(type(value), type(value).__name__)
    return f"{kind} {text[:SUMMARY_CHARS]}{'...' if len(text) > SUMMARY_CHARS else ''}"


def _collector(info: ValidationInfo) -> dict[str, FieldWarning] | None:
    """The caller's warnings, by field (pydantic may try a union member twice: one warning per field)."""
    context = info.context
    return context.get(WARNINGS_CONTEXT_KEY) if isinstance(context, dict) else None


def _problem(exc: ValidationError) -> str:
    errors = [e for e in exc.errors(include_url=False, include_input=False) if e["type"] != "none_required"]
    message = errors[0]["msg"] if errors else str(exc)
    return message.removeprefix("Value error, ")


def _drop_invalid(value: Any, handler: Any, info: ValidationInfo) -> Any:
    if value is None:
        return None
    try:
        return handler(value)
    except ValidationError as exc:
        warnings = _collector(info)
        if warnings is None:
            raise
        field = f"payload.{info.field_name}"
        warnings[field] = FieldWarning(field, f"{_problem(exc)}; dropped", value_summary(value))
        return None


def _event_timestamp(value: object, info: ValidationInfo) -> datetime:
    """As `parse_timestamp`, except that a timestamp without a zone is read as UTC, with a warning,
    when the caller collects warnings (producers serialising a naive UTC datetime are common)."""
    parsed = _iso_datetime(value)
    warnings = _collector(info)
    if parsed.tzinfo is not None or warnings is None:
        return parse_timestamp(value)
    in_utc = _in_utc(parsed.replace(tzinfo=UTC))
    field = f"payload.{info.field_name}"
    warnings[field] = FieldWarning(field, "has no time zone; read as UTC", value_summary(value))
    return in_utc


T = TypeVar("T")
# An optional field whose invalid value is dropped with a warning rather than rejecting the event.
Droppable = Annotated[T | None, WrapValidator(_drop_invalid)]

Identifier = Annotated[str, BeforeValidator(_identifier)]
Email = Annotated[str, BeforeValidator(normalise_email)]
Phone = Annotated[str, BeforeValidator(normalise_phone)]
Timestamp = Annotated[datetime, BeforeValidator(_event_timestamp)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_no_nul)]
ShortText = Annotated[str, StringConstraints(max_length=500), AfterValidator(_no_nul)]
LongText = Annotated[str, StringConstraints(max_length=4000), AfterValidator(_no_nul)]
Url = Annotated[str, StringConstraints(max_length=4000), AfterValidator(lambda v: _no_nul(v.strip()))]
