"""A Messaging contact export (CSV or JSON lines), read and judged with the contract, as the CRM's statements.

The export's rows carry the fields of a `contact.created` payload. This module owns what they mean,
next to the contract that defines them: each row is validated with the same schema and timestamp
rules as a live `contact.created` payload (so the backfill accepts exactly what the pipeline
accepts) and becomes the CRM's `ContactStatement`, or a rejection with its line number.
`crm.services.backfill` applies the statements and knows nothing of the file's format
(docs/decisions.md, "Backfill: the export is parsed next to the contract").

Idempotency: each row's `source_key` is its `eventId`, or `backfill:<sha256 of the canonical
validated row>`; a second run of the same file finds every statement already recorded.

When a row happened (`occurred_at`, which decides consent last-writer-wins): the row's own
`updatedAt`, else its `createdAt`, else `--as-of`, else the file's modification time.
"""

import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Unpack

from pydantic import ValidationError

from crm.services.backfill import BackfillFileError, BackfillOptions, BackfillResult, Item, backfill_apply
from crm.services.contacts import ContactEventKind, ContactStatement
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
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "f"})


class RowInvalid(Exception):
    """The one error a bad row raises: its reason, without the row's content."""


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
    raise RowInvalid(f"{column}: not a boolean (use true/false, 1/0, yes/no or leave empty)")


# Reading with `surrogateescape` turns each byte that is not UTF-8 into one of these code points.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _undecodable(value: str) -> str | None:
    """The first byte that was not UTF-8, or None."""
    found = _ESCAPED_BYTE.search(value)
    return None if found is None else f"0x{ord(found.group()) - 0xDC00:02x}"


def _not_utf8(byte: str) -> str:
    return f"not UTF-8 text (byte {byte}); re-export the file as UTF-8"


def read_csv(path: Path, result: BackfillResult, *, tenant: str | None = None) -> Generator[Row, None, None]:
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
                    raise RowInvalid(f"{len(header) + len(record[None])} fields, the header names {len(header)}")
                for column in (*COLUMNS, *TIME_COLUMNS):
                    raw = record.get(column)
                    if raw is None or raw.strip() == "":
                        continue
                    if byte := _undecodable(raw):
                        raise RowInvalid(f"{column}: {_not_utf8(byte)}")
                    values[column] = _csv_bool(column, raw) if column in OPT_IN_FIELDS else raw.strip()
            except RowInvalid as exc:
                values = {"_invalid": str(exc)}
            yield Row(line, values)


def read_jsonl(path: Path, result: BackfillResult) -> Generator[Row, None, None]:
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


def validate_row(row: Row, *, tenant: str | None, default_occurred_at: datetime) -> ContactStatement:
    """The row as the CRM's statement of a created contact, or RowInvalid with the reason."""
    values = dict(row.values)
    if "_invalid" in values:
        raise RowInvalid(values["_invalid"])
    if tenant:
        values["tenantId"] = tenant
    stamp = None
    for column in TIME_COLUMNS:
        raw = values.pop(column, None)
        if stamp is None and raw not in (None, ""):
            try:
                stamp = parse_timestamp(raw)
            except ValueError as exc:
                raise RowInvalid(f"{column}: {exc}") from None
    values = {k: v for k, v in values.items() if k in COLUMNS}
    try:
        payload = ContactCreated.model_validate(values)
    except ValidationError as exc:
        raise RowInvalid(_format_errors(exc)) from None
    source_key = payload.eventId or "backfill:" + hashlib.sha256(canonical_row(payload).encode()).hexdigest()
    return ContactStatement(
        kind=ContactEventKind.CREATED,
        tenant_external_id=payload.tenantId,
        contact_id=payload.contactId,
        **payload.contact_fields(),
        opt_ins=payload.consent_statements(),
        occurred_at=stamp or default_occurred_at,
        source_key=source_key,
    )


def _validated(row: Row, *, tenant: str | None, default_occurred_at: datetime) -> Item:
    try:
        return Item(row.line, validate_row(row, tenant=tenant, default_occurred_at=default_occurred_at))
    except RowInvalid as exc:
        logger.info("backfill_row_rejected line=%d kind=invalid", row.line)
        return Item(row.line, None, reason=str(exc), disposition="rejected")


@dataclass(frozen=True)
class ContactExport:
    """The export as `crm.services.backfill.backfill_apply` reads it (its `RowSource`)."""

    path: Path
    fmt: str
    tenant: str | None  # --tenant: every row's tenantId
    default_occurred_at: datetime

    def _rows(self, result: BackfillResult) -> Generator[Row, None, None]:
        if self.fmt == "csv":
            return read_csv(self.path, result, tenant=self.tenant)
        return read_jsonl(self.path, result)

    def check(self) -> None:
        """Raises BackfillFileError if the file is refused whole (a CSV header that does not fit)."""
        rows = self._rows(BackfillResult())
        next(rows, None)
        rows.close()

    def chunks(self, *, after_line: int, chunk_rows: int, result: BackfillResult) -> Iterator[list[Item]]:
        """The rows after `after_line`, `chunk_rows` at a time, each validated as it is read; sets
        `result.ignored_columns` once the file is read."""
        chunk: list[Item] = []
        for row in self._rows(result):
            if row.line <= after_line:
                continue
            chunk.append(_validated(row, tenant=self.tenant, default_occurred_at=self.default_occurred_at))
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def contacts_backfill(
    *,
    path: Path,
    fmt: str | None = None,
    tenant: str | None = None,
    as_of: datetime | None = None,
    **options: Unpack[BackfillOptions],
) -> BackfillResult:
    """Import the export at `path` (module doc; how, in `crm.services.backfill.backfill_apply`)."""
    export = ContactExport(
        path=path,
        fmt=detect_format(path, fmt),
        tenant=tenant,
        default_occurred_at=as_of or datetime.fromtimestamp(os.stat(path).st_mtime, UTC),
    )
    return backfill_apply(export, **options)
