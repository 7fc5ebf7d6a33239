"""Backfill: import a Messaging contact export (CSV or JSON lines) through the live `contact.created` path.

Each row is validated with the same schema as a live `contact.created` payload and applied with
`crm.services.contacts.contact_import`, so identity resolution and the consent rules are the
live ones. Rows are read one at a time: memory does not grow with the file.

Idempotency: each row's `source_key` is its `eventId`, or `backfill:<sha256 of the canonical
validated row>`; a second run of the same file finds every statement already recorded.

When a row happened (`occurred_at`, which decides consent last-writer-wins): the row's own
`updatedAt`, else its `createdAt`, else `--as-of`, else the file's modification time. An older
statement never overrides a newer live decision: it is recorded in the ledger as superseded.
"""

import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from pydantic import ValidationError

from crm.errors import ApplicationError
from messaging_events.contract.fields import parse_timestamp
from messaging_events.contract.schemas import OPT_IN_FIELDS, ContactCreated

logger = logging.getLogger(__name__)

COLUMNS = (
    "eventId",
    "tenantId",
    "contactId",
    "email",
    "phoneNumber",
    "firstName",
    "lastName",
    "emailOptIn",
    "smsOptIn",
    "pushOptIn",
    "whatsappOptIn",
)
TIME_COLUMNS = ("updatedAt", "createdAt")
OUTCOMES = ("created", "linked", "updated", "unchanged")
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "f"})
CHUNK_ROWS = 500
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
MAX_LISTED_REJECTIONS = 10_000
MAX_REASON_CHARS = 500


class BackfillFileError(Exception):
    """The file as a whole cannot be read (unknown format, missing columns)."""


class _RowInvalid(Exception):
    pass


@dataclass
class Rejection:
    line: int
    reason: str


@dataclass
class BackfillResult:
    rows: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*OUTCOMES, "rejected"), 0))
    rejections: list[Rejection] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False

    def reject(self, line: int, reason: str) -> None:
        self.counts["rejected"] += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            self.rejections.append(Rejection(line, reason[:MAX_REASON_CHARS]))

    @property
    def changed(self) -> int:
        return self.counts["created"] + self.counts["linked"] + self.counts["updated"]


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, Any]


def detect_format(path: Path, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise BackfillFileError(f"cannot tell the format of {path.name} from its extension; pass --format csv|jsonl")


def count_rows(path: Path, fmt: str) -> int:
    """Lines in the file (minus the CSV header), read in blocks: for the progress bar only."""
    lines = 0
    last = b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1
    return max(0, lines - 1) if fmt == "csv" else lines


def _csv_bool(column: str, raw: str) -> bool | None:
    word = raw.strip().lower()
    if word == "":
        return None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise _RowInvalid(f"{column}: not a boolean (use true/false, 1/0, yes/no or leave empty)")


# Reading with `surrogateescape` turns each byte that is not UTF-8 into one of these code points.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _undecodable(value: str) -> str | None:
    """The first byte that was not UTF-8, or None."""
    found = _ESCAPED_BYTE.search(value)
    return None if found is None else f"0x{ord(found.group()) - 0xDC00:02x}"


def _not_utf8(byte: str) -> str:
    return f"not UTF-8 text (byte {byte}); re-export the file as UTF-8"


def read_csv(path: Path, result: BackfillResult, *, tenant: str | None = None) -> Iterator[Row]:
    # Bytes that are not UTF-8 become lone surrogates, so the rows they are in are rejected, not the file.
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
        except csv.Error as exc:
            raise BackfillFileError(f"the CSV header line is unreadable ({exc})") from None
        if not header:
            raise BackfillFileError("the file is empty: a CSV export starts with a header line")
        missing = [c for c in ("contactId",) if c not in header]
        if not tenant and "tenantId" not in header:
            missing.append("tenantId (or pass --tenant)")
        if missing:
            raise BackfillFileError(f"the CSV header lacks the column(s) {', '.join(missing)}")
        result.ignored_columns = [c for c in header if c not in COLUMNS and c not in TIME_COLUMNS]
        records = iter(reader)
        while True:
            line = reader.line_num + 1
            try:
                record = next(records)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a field over csv.field_size_limit(): this row only
                yield Row(line, {"_invalid": f"unreadable CSV ({exc})"})
                continue
            values: dict[str, Any] = {}
            try:
                if None in record:  # more fields than the header names
                    raise _RowInvalid(f"{len(header) + len(record[None])} fields, the header names {len(header)}")
                for column in (*COLUMNS, *TIME_COLUMNS):
                    raw = record.get(column)
                    if raw is None or raw.strip() == "":
                        continue
                    if byte := _undecodable(raw):
                        raise _RowInvalid(f"{column}: {_not_utf8(byte)}")
                    values[column] = _csv_bool(column, raw) if column in OPT_IN_FIELDS else raw.strip()
            except _RowInvalid as exc:
                values = {"_invalid": str(exc)}
            yield Row(line, values)


def read_jsonl(path: Path, result: BackfillResult) -> Iterator[Row]:
    ignored: set[str] = set()
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            if byte := _undecodable(text):
                yield Row(line, {"_invalid": _not_utf8(byte)})
                continue
            try:
                values = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Row(line, {"_invalid": f"not JSON ({exc.msg} at column {exc.colno})"})
                continue
            if not isinstance(values, dict):
                yield Row(line, {"_invalid": f"a line must hold a JSON object, got {type(values).__name__}"})
                continue
            for key in values:
                if key not in COLUMNS and key not in TIME_COLUMNS and len(ignored) < 50:
                    ignored.add(key)
            yield Row(line, values)
    result.ignored_columns = sorted(ignored)


@dataclass(frozen=True)
class ValidRow:
    payload: ContactCreated
    occurred_at: datetime
    source_key: str


def _format_errors(exc: ValidationError) -> str:
    # Locations and messages only, never the input: rows hold personal data.
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:10]:
        location = ".".join(str(p) for p in error["loc"]) or "row"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def canonical_row(payload: ContactCreated) -> str:
    data = payload.model_dump(mode="json", exclude_none=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def validate_row(row: Row, *, tenant: str | None, default_occurred_at: datetime) -> ValidRow:
    values = dict(row.values)
    if "_invalid" in values:
        raise _RowInvalid(values["_invalid"])
    if tenant:
        values["tenantId"] = tenant
    stamp = None
    for column in TIME_COLUMNS:
        raw = values.pop(column, None)
        if stamp is None and raw not in (None, ""):
            try:
                stamp = parse_timestamp(raw)
            except ValueError as exc:
                raise _RowInvalid(f"{column}: {exc}") from None
    values = {k: v for k, v in values.items() if k in COLUMNS}
    try:
        payload = ContactCreated.model_validate(values)
    except ValidationError as exc:
        raise _RowInvalid(_format_errors(exc)) from None
    source_key = payload.eventId or "backfill:" + hashlib.sha256(canonical_row(payload).encode()).hexdigest()
    return ValidRow(payload=payload, occurred_at=stamp or default_occurred_at, source_key=source_key)


def _apply(valid: ValidRow) -> str:
    from crm.services.contacts import contact_import

    p = valid.payload
    result = contact_import(
        tenant_external_id=p.tenantId,
        contact_id=p.contactId,
        email=p.email,
        phone=p.phoneNumber,
        first_name=p.firstName,
        last_name=p.lastName,
        opt_ins=p.consent_statements(),
        occurred_at=valid.occurred_at,
        source_key=valid.source_key,
        source_event_id=None,
    )
    return _outcome_name(result)


def _outcome_name(result: Any) -> str:
    outcome = getattr(result, "outcome", result)
    name = getattr(outcome, "value", outcome)
    if name not in OUTCOMES:
        raise RuntimeError(f"contact_import returned an unknown outcome {name!r}")
    return name


class _DryRunRollback(Exception):
    pass


def contacts_backfill(
    *,
    path: Path,
    fmt: str | None = None,
    tenant: str | None = None,
    as_of: datetime | None = None,
    dry_run: bool = False,
    on_row: Callable[[BackfillResult], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> BackfillResult:
    """Import the file row by row. Each chunk of rows commits on its own (a dry run: one transaction,
    rolled back at the end, so it reports exactly what a real run would change)."""
    fmt = detect_format(path, fmt)
    result = BackfillResult(dry_run=dry_run)
    default_occurred_at = as_of or datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    rows = read_csv(path, result, tenant=tenant) if fmt == "csv" else read_jsonl(path, result)

    def run_rows(limit: int | None) -> bool:
        """Process up to `limit` rows (all when None); False once the file is exhausted."""
        for taken, row in enumerate(rows, start=1):
            _process(row)
            if limit is not None and taken >= limit:
                return True
        return False

    def _process(row: Row) -> None:
        result.rows += 1
        try:
            valid = validate_row(row, tenant=tenant, default_occurred_at=default_occurred_at)
            with transaction.atomic():  # a savepoint: a refused row leaves nothing behind
                outcome = _apply(valid)
        except _RowInvalid as exc:
            result.reject(row.line, str(exc))
            logger.info("backfill_row_rejected line=%d kind=invalid", row.line)
        except ApplicationError as exc:
            result.reject(row.line, exc.message)
            logger.info("backfill_row_rejected line=%d kind=refused", row.line)
        except TRANSIENT_ERRORS:
            raise  # the database is gone: stop; committed chunks stay, and a rerun skips them
        except Exception as exc:  # a bug must not stop a long import; the row is reported
            result.reject(row.line, f"internal error: {type(exc).__name__}")
            logger.error("backfill_row_failed line=%d error=%s", row.line, type(exc).__name__)
        else:
            result.counts[outcome] += 1
        if on_row is not None:
            on_row(result)

    if dry_run:
        try:
            with transaction.atomic():
                run_rows(None)
                raise _DryRunRollback
        except _DryRunRollback:
            pass
    else:
        more = True
        while more:
            with transaction.atomic():
                more = run_rows(chunk_rows)
    logger.info(
        "backfill_done file=%s rows=%d dry_run=%s %s",
        path.name,
        result.rows,
        dry_run,
        " ".join(f"{k}={v}" for k, v in result.counts.items()),
    )
    return result
