"""Backfill: apply a file of contact statements with the effect of the live `contact.created` path.

The file's rows arrive already judged, as the CRM's `ContactStatement`s or rejections with their line
numbers, from a `RowSource`: the side that owns the file's format reads and validates it
(`messaging_events.contact_export`, with the event contract). Two ways to apply them:

- bulk (the default): chunks of rows are planned set-based (crm.services.backfill_bulk): rows that
  create a new person are written in a few statements per chunk, rows whose statements are all
  known already are counted `unchanged`, and every other row goes through `contact_statement_apply`, in file order;
- row by row (`--row-by-row`, the reference): every row through `crm.services.contacts.contact_statement_apply`.

Rows are read a chunk at a time: memory does not grow with the file. In bulk, a second process reads
and validates the next chunk while this one is written (crm.services.backfill_pipeline). Each
transaction commits its rows together with the file's checkpoint (crm.models.BackfillCheckpoint), so
`--resume` continues after the last committed line. An older statement never overrides a newer live
decision: it is recorded in the ledger as superseded.
"""

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from crm.errors import ApplicationError
from crm.models import BackfillCheckpoint
from crm.services.contacts import ContactStatement, contact_statement_apply

logger = logging.getLogger(__name__)

OUTCOMES = ("created", "linked", "updated", "unchanged")
CHUNK_ROWS = 2_500  # bulk path: rows read, planned and written together
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
    overlapped_chunks: int = 0  # chunks written while the ones before them were (crm.services.backfill_lanes)

    def merge(self, tally: "Tally", *, rows: int) -> None:
        self.rows += rows
        for name, n in tally.counts.items():
            self.counts[name] += n
        room = MAX_LISTED_REJECTIONS - len(self.rejections)
        self.rejections.extend(tally.rejections[: max(0, room)])

    @property
    def changed(self) -> int:
        return self.counts["created"] + self.counts["linked"] + self.counts["updated"]


@dataclass
class Item:
    """One row of a chunk, planned: `disposition` is "rejected", "new", "unchanged" or "row" (through
    contact_statement_apply)."""

    line: int
    statement: ContactStatement | None
    reason: str = ""
    disposition: str = ""
    keys: frozenset[str] = frozenset()  # set by the bulk plan: what makes it about the same person as another row


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


def plan_row_by_row(items: list[Item]) -> list[Step]:
    for item in items:
        item.disposition = item.disposition or "row"
    return [Step("row" if item.disposition == "row" else "bulk", [item]) for item in items]


def _outcome_name(result: Any) -> str:
    outcome = getattr(result, "outcome", result)
    name = getattr(outcome, "value", outcome)
    if name not in OUTCOMES:
        raise RuntimeError(f"contact_statement_apply returned an unknown outcome {name!r}")
    return name


def _row_step_apply(item: Item, tally: Tally) -> None:
    assert item.statement is not None
    try:
        with transaction.atomic():  # a savepoint: a refused row leaves nothing behind
            outcome = _outcome_name(contact_statement_apply(item.statement))
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
    # In the body: backfill_bulk imports this module's row types (Item, Step), a real cycle.
    from crm.services.backfill_bulk import new_contacts_write

    new = [item.statement for item in items if item.disposition == "new" and item.statement is not None]
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


class RowSource(Protocol):
    """A file of contact statements, read and validated by the side that owns its format."""

    @property
    def path(self) -> Path:
        """The file: its checksum keys the checkpoint."""
        ...

    @property
    def tenant(self) -> str | None:
        """The tenant given for every row (`--tenant`), also part of the checkpoint's key."""
        ...

    def check(self) -> None:
        """Raise BackfillFileError if the file is refused whole; called before anything is written."""

    def chunks(self, *, after_line: int, chunk_rows: int, result: BackfillResult) -> Iterator[list[Item]]:
        """The rows after `after_line` as items (a statement, or a rejection with its reason), `chunk_rows`
        at a time, read lazily; sets `result.ignored_columns` once the file is read."""
        ...


class BackfillOptions(TypedDict, total=False):
    """`backfill_apply`'s options, for the callers that pass them through (`contacts_backfill`)."""

    dry_run: bool
    row_by_row: bool
    chunk_rows: int | None
    resume: bool
    on_progress: Callable[[BackfillResult], None] | None


def backfill_apply(
    source: RowSource,
    *,
    dry_run: bool = False,
    row_by_row: bool = False,
    chunk_rows: int | None = None,
    resume: bool = False,
    on_progress: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """Apply the file's statements (module doc). Each chunk commits with the checkpoint; `resume` starts
    after the checkpoint's last line. A dry run is one transaction, rolled back at the end, so it reports
    exactly what a real run would change (and writes no checkpoint)."""
    # In the body: backfill_bulk, backfill_lanes and backfill_pipeline import this module's row types.
    from crm.services.backfill_bulk import plan_bulk
    from crm.services.backfill_lanes import chunks_apply_in_lanes
    from crm.services.backfill_pipeline import validated_chunks

    started = time.monotonic()
    result = BackfillResult(dry_run=dry_run)
    source.check()
    checkpoint = None if dry_run else checkpoint_open(path=source.path, tenant=source.tenant, resume=resume)
    result.resumed_after_line = checkpoint.last_line if checkpoint is not None and resume else 0
    size = chunk_rows or (ROW_BY_ROW_CHUNK_ROWS if row_by_row else CHUNK_ROWS)
    run = _Run(
        planner=plan_row_by_row if row_by_row else plan_bulk,
        row_budget=size if row_by_row else PER_ROW_ROWS_PER_TRANSACTION,
        checkpoint=checkpoint,
        result=result,
    )

    def progress() -> None:
        if on_progress is not None:
            on_progress(result)

    def apply_all(chunks: Iterator[list[Item]]) -> None:
        # Several chunks at once, each on its own connection (backfill_lanes), unless the caller's transaction
        # must hold every write (a dry run, or a caller inside a transaction) or the reference path is asked for.
        if not row_by_row and not connection.in_atomic_block:
            result.overlapped_chunks = chunks_apply_in_lanes(chunks, run, after_chunk=progress)
            return
        for items in chunks:
            _chunk_apply(items, run)
            del items  # dropped before the next chunk arrives: at most two are alive
            progress()

    def run_all() -> None:
        if row_by_row:  # the reference path stays in one process
            apply_all(source.chunks(after_line=result.resumed_after_line, chunk_rows=size, result=result))
            return
        with validated_chunks(source, size, result) as chunks:  # read and validated in a second process
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
        "backfill_done file=%s rows=%d dry_run=%s bulk=%s overlapped_chunks=%d seconds=%.1f %s",
        source.path.name,
        result.rows,
        dry_run,
        not row_by_row,
        result.overlapped_chunks,
        result.seconds,
        " ".join(f"{k}={v}" for k, v in result.counts.items()),
    )
    return result
