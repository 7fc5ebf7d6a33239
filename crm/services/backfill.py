"""Backfill: import a Messaging contact export (CSV or JSON lines) with the effect of the live `contact.created` path.

Each row is validated with the same schema as a live `contact.created` payload. Two ways to apply it:

- bulk (the default): chunks of rows are planned set-based (crm.services.backfill_bulk): rows that
  create a new person are written in a few statements per chunk, rows whose statements are all
  known already are counted `unchanged`, and every other row goes through `contact_statement_apply`, in file order;
- row by row (`--row-by-row`, the reference): every row through `crm.services.contacts.contact_statement_apply`.

Rows are read a chunk at a time: memory does not grow with the file. In bulk, a second process reads
and validates the next chunk while this one is written (crm.services.backfill_pipeline). Each
transaction commits its rows together with the file's checkpoint (crm.models.BackfillCheckpoint), so
`--resume` continues after the last committed line.

Idempotency: each row's `source_key` is its `eventId`, or `backfill:<sha256 of the canonical
validated row>`; a second run of the same file finds every statement already recorded.

When a row happened (`occurred_at`, which decides consent last-writer-wins): the row's own
`updatedAt`, else its `createdAt`, else `--as-of`, else the file's modification time. An older
statement never overrides a newer live decision: it is recorded in the ledger as superseded.
"""

import csv
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from pydantic import ValidationError

from crm.errors import ApplicationError
from crm.models import BackfillCheckpoint
from crm.services.contacts import ContactEventKind, ContactStatement, contact_statement_apply
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
CHUNK_ROWS = 5_000  # bulk path: rows read, planned and written together
ROW_BY_ROW_CHUNK_ROWS = 500  # per-row path: rows per transaction
# Rows applied by contact_statement_apply per transaction in the bulk path: each holds up to three advisory
# locks until commit, and the lock table is shared (max_locks_per_transaction x connections).
PER_ROW_ROWS_PER_TRANSACTION = 500
RETRIES = 3
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
MAX_LISTED_REJECTIONS = 10_000
MAX_REASON_CHARS = 500


class BackfillFileError(Exception):
    """The file as a whole cannot be read (unknown format, missing columns)."""


class _RowInvalid(Exception):
    pass


@dataclass
class RowRejection:
    line: int
    reason: str


@dataclass
class BackfillResult:
    rows: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*OUTCOMES, "rejected"), 0))
    rejections: list[RowRejection] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False
    resumed_after_line: int = 0  # rows up to this line were committed by an earlier run
    seconds: float = 0.0

    def merge(self, tally: "Tally", *, rows: int) -> None:
        self.rows += rows
        for name, n in tally.counts.items():
            self.counts[name] += n
        room = MAX_LISTED_REJECTIONS - len(self.rejections)
        self.rejections.extend(tally.rejections[: max(0, room)])

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


@dataclass
class Item:
    """One row of a chunk, planned: `disposition` is "rejected", "new", "unchanged" or "row" (through
    contact_statement_apply)."""

    line: int
    valid: ValidRow | None
    reason: str = ""
    disposition: str = ""


@dataclass(frozen=True)
class Step:
    """Consecutive items applied together: "bulk" (set-based: new, unchanged, rejected) or "row" (one item)."""

    kind: str
    items: list[Item]


@dataclass
class Tally:
    """What one transaction did; merged into the result only once it committed."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*OUTCOMES, "rejected"), 0))
    rejections: list[RowRejection] = field(default_factory=list)

    def reject(self, line: int, reason: str) -> None:
        self.counts["rejected"] += 1
        self.rejections.append(RowRejection(line, reason[:MAX_REASON_CHARS]))


def _validated(row: Row, *, tenant: str | None, default_occurred_at: datetime) -> Item:
    try:
        return Item(row.line, validate_row(row, tenant=tenant, default_occurred_at=default_occurred_at))
    except _RowInvalid as exc:
        logger.info("backfill_row_rejected line=%d kind=invalid", row.line)
        return Item(row.line, None, reason=str(exc), disposition="rejected")


def plan_row_by_row(items: list[Item]) -> list[Step]:
    for item in items:
        item.disposition = item.disposition or "row"
    return [Step("row" if item.disposition == "row" else "bulk", [item]) for item in items]


def _apply_row(valid: ValidRow) -> str:
    p = valid.payload
    result = contact_statement_apply(
        ContactStatement(
            kind=ContactEventKind.CREATED,
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
    )
    return _outcome_name(result)


def _outcome_name(result: Any) -> str:
    outcome = getattr(result, "outcome", result)
    name = getattr(outcome, "value", outcome)
    if name not in OUTCOMES:
        raise RuntimeError(f"contact_statement_apply returned an unknown outcome {name!r}")
    return name


def _row_step_apply(item: Item, tally: Tally) -> None:
    assert item.valid is not None
    try:
        with transaction.atomic():  # a savepoint: a refused row leaves nothing behind
            outcome = _apply_row(item.valid)
    except ApplicationError as exc:
        tally.reject(item.line, exc.message)
        logger.info("backfill_row_rejected line=%d kind=refused", item.line)
    except TRANSIENT_ERRORS:
        raise  # the database is gone (or a deadlock): the chunk's transaction is retried or the run stops
    except Exception as exc:  # a bug must not stop a long import; the row is reported
        tally.reject(item.line, f"internal error: {type(exc).__name__}")
        logger.error("backfill_row_failed line=%d error=%s", item.line, type(exc).__name__)
    else:
        tally.counts[outcome] += 1


def _bulk_step_apply(items: list[Item], tally: Tally) -> None:
    # In the body: backfill_bulk imports this module's row types (Item, Step, ValidRow), a real cycle.
    from crm.services.backfill_bulk import new_contacts_write

    new = [item.valid for item in items if item.disposition == "new" and item.valid is not None]
    if new:
        new_contacts_write(new)
        tally.counts["created"] += len(new)
    for item in items:
        if item.disposition == "rejected":
            tally.reject(item.line, item.reason)
        elif item.disposition == "unchanged":
            tally.counts["unchanged"] += 1


def _steps_apply(steps: list[Step], tally: Tally, row_budget: int) -> int:
    """Apply steps in order until `row_budget` rows went through contact_statement_apply. Returns the items applied."""
    applied = 0
    for step in steps:
        if step.kind == "row":
            if row_budget <= 0:
                break
            row_budget -= 1
            _row_step_apply(step.items[0], tally)
        else:
            _bulk_step_apply(step.items, tally)
        applied += len(step.items)
    return applied


# Deadlock, serialization failure, unique violation (a live worker linked a contact of a "new" row
# between planning and writing): the transaction is rolled back and the rest of the chunk replanned.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "23505"})


def _retryable(exc: DatabaseError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in RETRYABLE_SQLSTATES


@dataclass
class _Run:
    planner: Callable[[list[Item]], list[Step]]
    row_budget: int
    checkpoint: BackfillCheckpoint | None
    result: BackfillResult


def _transaction_settings() -> None:
    """For this transaction only: its commit does not wait for its WAL to reach disk (a crash can
    lose the last few commits, PostgreSQL stays consistent, and the checkpoint is in the same
    transactions, so `--resume` continues after the last one that survived); and no JIT compilation:
    a chunk's statements cost enough to cross `jit_above_cost`, and compiling them took longer (0.5 s
    for one lookup) than running them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true)")


def _chunk_apply(items: list[Item], run: _Run) -> None:
    """Plan and apply one chunk: one transaction, or more when many rows need contact_statement_apply (each
    commits its rows with the checkpoint). A retryable failure replans the rows not yet committed."""
    remaining = items
    failures = 0
    while remaining:
        tally = Tally()
        try:
            with transaction.atomic():
                _transaction_settings()
                steps = run.planner(remaining)
                applied = _steps_apply(steps, tally, run.row_budget)
                if run.checkpoint is not None:
                    checkpoint_advance(run.checkpoint, last_line=remaining[applied - 1].line, rows=applied, tally=tally)
        except DatabaseError as exc:
            if not _retryable(exc) or failures >= RETRIES:
                raise
            failures += 1
            logger.warning(
                "backfill_chunk_retry line=%d sqlstate=%s", remaining[0].line, getattr(exc.__cause__, "sqlstate", None)
            )
            continue
        run.result.merge(tally, rows=applied)
        remaining = remaining[applied:]


def _chunks(rows: Iterator[Row], size: int, after_line: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        if row.line <= after_line:
            continue
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_open(*, path: Path, tenant: str | None, resume: bool) -> BackfillCheckpoint:
    """The file's checkpoint: kept as it is with `resume`, else started again at line 0."""
    now = timezone.now()
    checkpoint, created = BackfillCheckpoint.objects.get_or_create(
        file_sha256=file_sha256(path),
        tenant_override=tenant or "",
        defaults={"file_name": path.name[:300], "started_at": now, "updated_at": now},
    )
    if not created and not resume:
        checkpoint.last_line, checkpoint.rows_done, checkpoint.counts = 0, 0, {}
        checkpoint.completed, checkpoint.started_at, checkpoint.updated_at = False, now, now
        checkpoint.file_name = path.name[:300]
        checkpoint.save()
    return checkpoint


def checkpoint_advance(checkpoint: BackfillCheckpoint, *, last_line: int, rows: int, tally: Tally) -> None:
    """Inside the transaction that applied the rows up to `last_line`."""
    counts = dict(checkpoint.counts or {})
    for name, n in tally.counts.items():
        counts[name] = counts.get(name, 0) + n
    BackfillCheckpoint.objects.filter(pk=checkpoint.pk).update(
        last_line=last_line, rows_done=checkpoint.rows_done + rows, counts=counts, updated_at=timezone.now()
    )
    checkpoint.last_line, checkpoint.rows_done, checkpoint.counts = last_line, checkpoint.rows_done + rows, counts


class _DryRunRollback(Exception):
    pass


def contacts_backfill(
    *,
    path: Path,
    fmt: str | None = None,
    tenant: str | None = None,
    as_of: datetime | None = None,
    dry_run: bool = False,
    row_by_row: bool = False,
    chunk_rows: int | None = None,
    resume: bool = False,
    on_progress: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """Import the file (module doc). Each chunk commits with the checkpoint; `resume` starts after the
    checkpoint's last line. A dry run is one transaction, rolled back at the end, so it reports exactly
    what a real run would change (and writes no checkpoint)."""
    # In the body: backfill_bulk and backfill_pipeline import this module's row types and readers.
    from crm.services.backfill_bulk import plan_bulk
    from crm.services.backfill_pipeline import Reading, validated_chunks

    fmt = detect_format(path, fmt)
    started = time.monotonic()
    result = BackfillResult(dry_run=dry_run)
    default_occurred_at = as_of or datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    reader = read_csv(path, result, tenant=tenant) if fmt == "csv" else read_jsonl(path, result)
    first = next(reader, None)  # reads the CSV header: a file refused whole fails here, before any write
    rows = itertools.chain([] if first is None else [first], reader)
    checkpoint = None if dry_run else checkpoint_open(path=path, tenant=tenant, resume=resume)
    result.resumed_after_line = checkpoint.last_line if checkpoint is not None and resume else 0
    size = chunk_rows or (ROW_BY_ROW_CHUNK_ROWS if row_by_row else CHUNK_ROWS)
    run = _Run(
        planner=plan_row_by_row if row_by_row else plan_bulk,
        row_budget=size if row_by_row else PER_ROW_ROWS_PER_TRANSACTION,
        checkpoint=checkpoint,
        result=result,
    )

    def apply_all(chunks: Iterator[list[Item]]) -> None:
        for items in chunks:
            _chunk_apply(items, run)
            del items  # dropped before the next chunk arrives: at most two are alive
            if on_progress is not None:
                on_progress(result)

    def run_all() -> None:
        if row_by_row:  # the reference path stays in one process
            apply_all(
                [_validated(row, tenant=tenant, default_occurred_at=default_occurred_at) for row in chunk]
                for chunk in _chunks(rows, size, result.resumed_after_line)
            )
            return
        reader.close()  # the worker process reads the file itself
        reading = Reading(path, fmt, tenant, default_occurred_at, size, result.resumed_after_line)
        with validated_chunks(reading, result) as chunks:
            apply_all(chunks)

    if dry_run:
        try:
            with transaction.atomic():
                run_all()
                raise _DryRunRollback
        except _DryRunRollback:
            pass
    else:
        run_all()
        assert checkpoint is not None  # every run but a dry one has one
        BackfillCheckpoint.objects.filter(pk=checkpoint.pk).update(completed=True, updated_at=timezone.now())
    result.rejections.sort(key=lambda r: r.line)
    result.seconds = time.monotonic() - started
    logger.info(
        "backfill_done file=%s rows=%d dry_run=%s bulk=%s seconds=%.1f %s",
        path.name,
        result.rows,
        dry_run,
        not row_by_row,
        result.seconds,
        " ".join(f"{k}={v}" for k, v in result.counts.items()),
    )
    return result
