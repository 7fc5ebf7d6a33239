"""The bulk backfill writes several chunks at once (`LANES`), each on its own database connection, and commits
them in file order.

A chunk's time is mostly PostgreSQL's (inserting its rows and index entries, checking their foreign keys at
commit), on one backend, one core. With chunks in flight on several backends, one is written while another
commits and a third waits its turn; the parent's own work and the validating process fill the gaps.

Each lane is a thread with a Django connection of its own, kept from one chunk to the next (a new backend
would load its catalog caches and prepare every statement again for each chunk) and renewed as the workers'
connections are: past `CONN_MAX_AGE`, or once an error left it unusable. A chunk overlaps the chunks before it
that are still in flight (its plan cannot see their rows) only when it cannot change what they do, nor be
changed by them:

- before it starts: no row of it shares a contactId, or an email or phone within its tenant, with a row of
  those chunks (`backfill_bulk.identity_keys`);
- its plan: every row is new, unchanged or rejected (nothing goes through `contact_statement_apply`), and
  every tenant it names exists. Its writes are then new profiles and the rows that hang from them, on keys
  the chunks before it never touch, so neither side can wait for a lock the other holds;
- once the chunk before it has committed, before its own commit: no profile its rows reached (`Item.keys`)
  was reached by a row of those chunks, whose writes could have made one of its "unchanged" rows changed.

Otherwise, or when its transaction fails with a retryable error, it rolls back, waits for the chunk before
it, and is applied as in one lane (`backfill._chunk_apply`), seeing everything committed before it. So the
effect is that of applying the chunks one after another, in file order.

Commits stay in file order: a chunk waits for the chunk before it inside its transaction, before it advances
the checkpoint. So `--resume` after a crash still continues after the last committed line, and if a chunk
fails, the chunks after it roll back. While it waits, it checks that no chunk before it is waiting for it,
through a chain of locks PostgreSQL cannot see the end of (a live worker waiting for this chunk's new contact
link, say, while an earlier chunk waits for that worker): if so, it rolls back and goes after them instead.
"""

import logging
import queue
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

LANES = 3  # chunks in flight at most
_POLL_S = 0.05

# Whether any of the backends `waiters` is blocked, directly or through other backends, by the backend `holder`.
_BLOCKED_BY_SQL = """
WITH RECURSIVE chain (pid) AS (
    SELECT unnest(pg_blocking_pids(waiter)) FROM unnest(%s::int[]) AS waiter
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
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    backend_pid: int | None = None
    overlapped: bool = False

    def reached(self) -> set[str]:
        """Every key the plan that applied each row gave it (identity and profiles: `Item.keys`)."""
        return {key for item in self.items for key in item.keys}


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


def _waited_on_by(unseen: list[_Flight]) -> bool:
    """Whether a chunk before this one is blocked, through any chain of backends, by this chunk's."""
    pids = [f.backend_pid for f in unseen if f.backend_pid is not None and not f.done.is_set()]
    if not pids:
        return False
    with connection.cursor() as cursor:
        cursor.execute(_BLOCKED_BY_SQL, [pids, connection.connection.info.backend_pid])
        return bool(cursor.fetchone()[0])


def _commit_after(flight: _Flight, previous: _Flight, unseen: list[_Flight]) -> None:
    """Inside this chunk's transaction: wait until the chunk before it has committed (and so every chunk
    before that), then check that none of those its plan could not see reached what its rows reached."""
    while not previous.done.wait(_POLL_S):
        if _waited_on_by(unseen):
            logger.info("backfill_lane_yield line=%d", flight.items[0].line)
            raise _InOrder
    if previous.error is not None:
        raise _Abandoned
    reached = flight.reached()
    if any(not reached.isdisjoint(earlier.reached()) for earlier in unseen):
        raise _InOrder


def _overlapped_apply(flight: _Flight, previous: _Flight, unseen: list[_Flight], run: _Run) -> None:
    """Plan and write the chunk while the chunks `unseen` (the last of them the one before it) are still in
    flight, then commit after them, or raise _InOrder (rolled back) when it may not overlap (module doc)."""
    tally = Tally()
    with transaction.atomic():
        _transaction_settings()
        steps = run.planner(flight.items)
        if any(step.kind == "row" for step in steps) or not _tenants_exist(flight.items):
            raise _InOrder
        applied = _steps_apply(steps, tally, run.row_budget)
        _commit_after(flight, previous, unseen)
        if run.checkpoint is not None:
            checkpoint_advance(run.checkpoint, last_line=flight.items[-1].line, rows=applied, tally=tally)
    flight.overlapped = True
    run.result.merge(tally, rows=applied)


def _lane(flight: _Flight, ahead: list[_Flight], run: _Run) -> None:
    """Apply one chunk; `ahead` are the chunks before it that were still in flight when it started."""
    try:
        flight.backend_pid = _backend_pid()
        previous = ahead[-1] if ahead else None
        # Chunks done by now have committed: this chunk's plan sees their rows.
        unseen = [earlier for earlier in ahead if not earlier.done.is_set()]
        if previous in unseen and all(flight.identity.isdisjoint(earlier.identity) for earlier in unseen):
            assert previous is not None
            try:
                _overlapped_apply(flight, previous, unseen, run)
                return
            except _InOrder:
                pass
            except DatabaseError as exc:
                if not _retryable(exc):
                    raise
        _wait_for(previous)
        _chunk_apply(flight.items, run)
    except BaseException as exc:  # reported by the main thread, which stops the run
        flight.error = exc
    finally:
        connection.close_if_unusable_or_obsolete()  # as close_old_connections does between a worker's tasks
        flight.done.set()


def _backend_pid() -> int:
    connection.ensure_connection()
    return connection.connection.info.backend_pid


def chunks_apply_in_lanes(chunks: Iterator[list[Item]], run: _Run, after_chunk: Callable[[], None]) -> int:
    """Apply the chunks, up to `LANES` at a time (module doc); `after_chunk` runs in this thread after each
    chunk, in file order. Returns how many chunks overlapped the ones before them. The first failure is raised once
    every lane has stopped."""
    in_flight: list[_Flight] = []
    overlapped = 0
    lanes = [_LaneThread(n) for n in range(LANES)]

    def finish_oldest() -> None:
        nonlocal overlapped
        flight = in_flight.pop(0)
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        overlapped += flight.overlapped
        after_chunk()

    try:
        for number, items in enumerate(chunks):
            ahead = list(in_flight)
            flight = _Flight(items, _identity_keys(items))
            # Chunk n goes to lane n % LANES, whose previous chunk (n - LANES) is done: at most LANES are in flight.
            lanes[number % LANES].start(flight, ahead, run)
            in_flight.append(flight)
            del items, flight, ahead  # a chunk is dropped once its lane is done
            if len(in_flight) >= LANES:
                finish_oldest()
        while in_flight:
            finish_oldest()
    finally:
        for lane in lanes:  # after a failure: the chunks still in flight roll back (_Abandoned) first
            lane.stop()
    return overlapped


class _LaneThread:
    """A thread that applies the chunks given to it one at a time (`_lane`), on one connection, closed at `stop`."""

    def __init__(self, number: int) -> None:
        self._chunks: queue.SimpleQueue[tuple[_Flight, list[_Flight], _Run] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._apply_each, name=f"backfill-lane-{number}", daemon=True)
        self._thread.start()

    def start(self, flight: _Flight, ahead: list[_Flight], run: _Run) -> None:
        self._chunks.put((flight, ahead, run))

    def stop(self) -> None:
        self._chunks.put(None)
        self._thread.join()

    def _apply_each(self) -> None:
        try:
            while (chunk := self._chunks.get()) is not None:
                _lane(*chunk)
                del chunk
        finally:
            connection.close()  # this thread's own connection
