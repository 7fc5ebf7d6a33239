"""The bulk backfill writes two chunks at once, each on its own database connection, and commits them in file order.

A chunk's time is mostly PostgreSQL's (inserting its rows and index entries, checking their foreign keys at
commit), on one backend, one core. With two chunks in flight, a second backend works while the first one's
chunk is written and committed; the parent's own work and the validating process fill the gaps.

Each chunk runs in a thread of its own (a Django connection of its own), and at most two are alive. Chunk n+1
overlaps chunk n only when it cannot change what chunk n does, nor be changed by it:

- before it starts: no row of n+1 shares a contactId, or an email or phone within its tenant, with a row of n
  (`backfill_bulk.identity_keys`);
- its plan (made without n's rows, which are not committed yet): every row is new, unchanged or rejected
  (nothing goes through `contact_statement_apply`), and every tenant it names exists. Its writes are then new
  profiles and the rows that hang from them, on keys chunk n never touches, so neither can wait for a lock
  the other holds;
- once chunk n has committed, before its own commit: no profile its rows reached (`Item.keys`) was reached by
  a row of chunk n, whose writes could have made one of n+1's "unchanged" rows changed.

Otherwise, or when its transaction fails with a retryable error, chunk n+1 rolls back, waits for chunk n, and
is applied as in one lane (`backfill._chunk_apply`), seeing everything chunk n committed. So the effect is
that of applying the chunks one after another, in file order.

Commits stay in file order: chunk n+1 waits for chunk n inside its transaction, before it advances the
checkpoint. So `--resume` after a crash still continues after the last committed line, and if chunk n fails,
chunk n+1 rolls back. While it waits, it checks that chunk n is not waiting for it, through a chain of
locks PostgreSQL cannot see the end of (a live worker waiting for n+1's new contact link, say, while chunk n
waits for that worker): if so, it rolls back and goes after chunk n instead.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.db import DatabaseError, connection, transaction

from crm.models import Tenant
from crm.services.backfill import (
    Item,
    Tally,
    _chunk_apply,
    _retryable,
    _Run,
    _steps_apply,
    _transaction_settings,
    checkpoint_advance,
)
from crm.services.backfill_bulk import identity_keys

logger = logging.getLogger(__name__)

_POLL_S = 0.05

# Whether the backend `waiter` is blocked, directly or through other backends, by the backend `holder`.
_BLOCKED_BY_SQL = """
WITH RECURSIVE chain (pid) AS (
    SELECT unnest(pg_blocking_pids(%s))
    UNION
    SELECT unnest(pg_blocking_pids(chain.pid)) FROM chain
)
SELECT EXISTS (SELECT 1 FROM chain WHERE pid = %s)
"""


@dataclass
class _Flight:
    """One chunk in a lane."""

    items: list[Item]
    identity: frozenset[str]  # the identity keys of its rows
    keys: set[str] = field(default_factory=set)  # every key its plans gave its rows (identity and profiles)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    backend_pid: int | None = None
    overlapped: bool = False


class _InOrder(Exception):
    """Roll this chunk's transaction back and apply it after the chunk before it."""


class _Abandoned(Exception):
    """The chunk before this one failed: this one is rolled back, and the run stops with that failure."""


def _identity_keys(items: list[Item]) -> frozenset[str]:
    return frozenset(key for item in items if item.statement is not None for key in identity_keys(item.statement))


def _wait_for(previous: _Flight | None) -> None:
    if previous is None:
        return
    previous.done.wait()
    if previous.error is not None:
        raise _Abandoned


def _tenants_exist(items: list[Item]) -> bool:
    names = {item.statement.tenant_external_id for item in items if item.statement is not None}
    return Tenant.objects.filter(external_id__in=names).count() == len(names)


def _waited_on_by(previous: _Flight) -> bool:
    """Whether the chunk before this one is blocked, through any chain of backends, by this chunk's."""
    if previous.backend_pid is None:
        return False
    with connection.cursor() as cursor:
        cursor.execute(_BLOCKED_BY_SQL, [previous.backend_pid, connection.connection.info.backend_pid])
        return bool(cursor.fetchone()[0])


def _commit_after(previous: _Flight, flight: _Flight) -> None:
    """Inside this chunk's transaction: wait until the chunk before it has committed (module doc)."""
    while not previous.done.wait(_POLL_S):
        if _waited_on_by(previous):
            logger.info("backfill_lane_yield line=%d", flight.items[0].line)
            raise _InOrder
    if previous.error is not None:
        raise _Abandoned
    if not flight.keys.isdisjoint(previous.keys):
        raise _InOrder


def _overlapped_apply(flight: _Flight, previous: _Flight, run: _Run) -> None:
    """Plan and write the chunk while the chunk before it is still in flight, then commit after it, or raise
    _InOrder (rolled back) when it may not overlap (module doc)."""
    tally = Tally()
    with transaction.atomic():
        _transaction_settings()
        steps = run.planner(flight.items)
        flight.keys.update(key for item in flight.items for key in item.keys)
        if any(step.kind == "row" for step in steps) or not _tenants_exist(flight.items):
            raise _InOrder
        applied = _steps_apply(steps, tally, run.row_budget)
        _commit_after(previous, flight)
        if run.checkpoint is not None:
            checkpoint_advance(run.checkpoint, last_line=flight.items[-1].line, rows=applied, tally=tally)
    flight.overlapped = True
    run.result.merge(tally, rows=applied)


def _lane(flight: _Flight, previous: _Flight | None, run: _Run) -> None:
    try:
        flight.backend_pid = _backend_pid()
        if previous is not None and not previous.done.is_set() and flight.identity.isdisjoint(previous.identity):
            try:
                _overlapped_apply(flight, previous, run)
                return
            except _InOrder:
                pass
            except DatabaseError as exc:
                if not _retryable(exc):
                    raise
        _wait_for(previous)
        _chunk_apply(flight.items, run)
        flight.keys.update(key for item in flight.items for key in item.keys)
    except BaseException as exc:  # reported by the main thread, which stops the run
        flight.error = exc
    finally:
        flight.done.set()
        connection.close()  # this thread's own connection


def _backend_pid() -> int:
    connection.ensure_connection()
    return connection.connection.info.backend_pid


def chunks_apply_in_lanes(chunks: Iterator[list[Item]], run: _Run, after_chunk: Callable[[], None]) -> int:
    """Apply the chunks two at a time (module doc); `after_chunk` runs in this thread after each chunk, in
    file order. Returns how many chunks overlapped the one before them. The first failure is raised once
    every lane has stopped."""
    in_flight: list[tuple[_Flight, threading.Thread]] = []
    overlapped = 0

    def finish_oldest() -> None:
        nonlocal overlapped
        flight, thread = in_flight.pop(0)
        thread.join()
        if flight.error is not None:
            raise flight.error
        overlapped += flight.overlapped
        after_chunk()

    try:
        for items in chunks:
            previous = in_flight[-1][0] if in_flight else None
            flight = _Flight(items, _identity_keys(items))
            thread = threading.Thread(
                target=_lane, args=(flight, previous, run), name=f"backfill-lane-{items[0].line}", daemon=True
            )
            thread.start()
            in_flight.append((flight, thread))
            del items, flight, previous  # a chunk is dropped once its lane is done
            if len(in_flight) > 1:
                finish_oldest()
        while in_flight:
            finish_oldest()
    finally:
        for _, thread in in_flight:  # after a failure: the lanes still running roll back (_Abandoned)
            thread.join()
    return overlapped
