"""Batcher logic with a fake publish coroutine: batch size, linger, completion after publish, backoff.

(The broker-facing behaviour is covered against real Redis in test_bridge_processes.py.)
"""

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from messaging_events.bridge.batcher import Batcher, Slots
from messaging_events.bridge.runner import Bridge, BridgeConfig
from tests.messaging_events.samples import contact_job, contact_payloads, message_job, message_payloads


class FakeBroker:
    """Records published batches; can fail a number of times first, or block until released."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[tuple[str, list[Any]]] = []
        self.calls: list[float] = []
        self.batch_ids: list[str] = []  # one per attempt, failed ones included
        self.failures = failures
        self.gate: asyncio.Event | None = None
        self.waiting = 0  # what the broker reports as already waiting in the queue

    async def publish(self, queue: str, jobs: list[Any], batch_id: str) -> int:
        self.calls.append(time.monotonic())
        self.batch_ids.append(batch_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.batches.append((queue, list(jobs)))
        return self.waiting


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_full_batch_is_published_without_waiting_for_the_linger() -> None:
    async def go() -> tuple[float, FakeBroker]:
        broker = FakeBroker()
        batcher = Batcher("normal", broker.publish, max_size=5, linger_s=5.0)
        batcher.start()
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit({"id": str(i)}) for i in range(5)))
        return time.monotonic() - started, broker

    elapsed, broker = run(go())
    assert elapsed < 1.0
    assert [[j["id"] for j in jobs] for _, jobs in broker.batches] == [["0", "1", "2", "3", "4"]]


def test_a_partial_batch_waits_for_the_linger_then_goes_as_one_message() -> None:
    async def go() -> tuple[float, FakeBroker]:
        broker = FakeBroker()
        batcher = Batcher("low", broker.publish, max_size=100, linger_s=0.2)
        batcher.start()
        started = time.monotonic()
        first = asyncio.ensure_future(batcher.submit({"id": "a"}))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.submit({"id": "b"}))
        await asyncio.sleep(0.05)
        assert not first.done()
        assert not second.done()
        assert broker.batches == []
        await asyncio.gather(first, second)
        return time.monotonic() - started, broker

    elapsed, broker = run(go())
    # The linger counts from the oldest job in the batch.
    assert 0.18 <= elapsed < 0.6
    assert broker.batches == [("low", [{"id": "a"}, {"id": "b"}])]


def test_more_than_a_batch_is_split_at_max_size() -> None:
    async def go() -> FakeBroker:
        broker = FakeBroker()
        batcher = Batcher("high", broker.publish, max_size=3, linger_s=0.01)
        batcher.start()
        await asyncio.gather(*(batcher.submit({"id": i}) for i in range(7)))
        return broker

    broker = run(go())
    assert [len(jobs) for _, jobs in broker.batches] == [3, 3, 1]
    assert [j["id"] for _, jobs in broker.batches for j in jobs] == list(range(7))
    assert len(set(broker.batch_ids)) == 3  # each batch its own task id


def test_batch_size_one_publishes_each_job_alone() -> None:
    async def go() -> FakeBroker:
        broker = FakeBroker()
        batcher = Batcher("normal", broker.publish, max_size=1, linger_s=1.0)
        batcher.start()
        await asyncio.gather(*(batcher.submit({"id": i}) for i in range(4)))
        return broker

    broker = run(go())
    assert [jobs for _, jobs in broker.batches] == [[{"id": 0}], [{"id": 1}], [{"id": 2}], [{"id": 3}]]


def test_submit_returns_only_after_the_publish_returned() -> None:
    async def go() -> None:
        broker = FakeBroker()
        broker.gate = asyncio.Event()
        batcher = Batcher("normal", broker.publish, max_size=2, linger_s=0.0)
        batcher.start()
        submitted = asyncio.ensure_future(batcher.submit({"id": 1}))
        await asyncio.sleep(0.1)
        assert len(broker.calls) == 1  # publishing has started...
        assert not submitted.done()  # ...but the job is not done until the broker has its message
        broker.gate.set()
        await submitted
        assert broker.batches == [("normal", [{"id": 1}])]

    run(go())


def test_failed_publish_keeps_the_jobs_and_retries_with_capped_backoff(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> tuple[Batcher, FakeBroker]:
        broker = FakeBroker(failures=6)
        batcher = Batcher("high", broker.publish, max_size=10, linger_s=0.0, retry_initial_s=0.01, retry_max_s=0.08)
        batcher.start()
        await asyncio.gather(*(batcher.submit({"id": i}) for i in range(3)))
        return batcher, broker

    with caplog.at_level("INFO", logger="messaging_events.bridge.batcher"):
        batcher, broker = run(go())
    assert len(broker.calls) == 7
    gaps = [b - a for a, b in zip(broker.calls, broker.calls[1:], strict=False)]
    # Exponential, then capped: 0.01, 0.02, 0.04, 0.08, 0.08, 0.08 (never a spin, never unbounded).
    # Each gap is at least its delay; a loaded machine may only add to it.
    scheduled = [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]
    assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, scheduled, strict=True)), gaps
    assert max(gaps) < 0.3
    assert sum(gaps) >= 0.25
    assert broker.batches == [("high", [{"id": 0}, {"id": 1}, {"id": 2}])]
    # Every attempt publishes under the same task id, the one the in-flight register tracks.
    assert len(set(broker.batch_ids)) == 1
    assert batcher.publish_failures == 6
    assert batcher.published_jobs == 3
    assert batcher.published_batches == 1
    failed = [r for r in caplog.records if r.getMessage() == "broker_publish_failed"]
    assert [(r.queue, r.jobs) for r in failed] == [("high", 3)] * 6
    assert "ConnectionError: broker unreachable" in failed[0].error
    recovered = [r for r in caplog.records if r.getMessage() == "broker_publish_recovered"]
    assert [(r.queue, r.jobs) for r in recovered] == [("high", 3)]


def test_while_the_broker_is_down_jobs_stay_pending() -> None:
    async def go() -> None:
        broker = FakeBroker(failures=1_000_000)
        batcher = Batcher("normal", broker.publish, max_size=10, linger_s=0.0, retry_initial_s=0.01, retry_max_s=0.05)
        batcher.start()
        submitted = asyncio.ensure_future(batcher.submit({"id": 1}))
        await asyncio.sleep(0.5)
        assert not submitted.done()
        assert broker.batches == []
        # Backoff keeps the attempts bounded: about 0.5 s / 0.05 s, not thousands.
        assert len(broker.calls) < 20
        broker.failures = 0
        await submitted
        assert broker.batches == [("normal", [{"id": 1}])]

    run(go())


def test_flush_now_publishes_without_lingering() -> None:
    async def go() -> float:
        broker = FakeBroker()
        batcher = Batcher("low", broker.publish, max_size=100, linger_s=30.0)
        batcher.start()
        started = time.monotonic()
        submitted = asyncio.ensure_future(batcher.submit({"id": 1}))
        await asyncio.sleep(0.05)
        batcher.flush_now()
        await submitted
        later = time.monotonic()
        await batcher.submit({"id": 2})  # after flush_now, later jobs do not linger either
        assert time.monotonic() - later < 1.0
        return later - started

    assert run(go()) < 1.0


async def _arrive_every(batcher: Batcher, ids: range, gap_s: float) -> None:
    """Jobs arriving one by one, as a steady flow from BullMQ does; returns when all are published."""
    submitted = []
    for i in ids:
        submitted.append(asyncio.ensure_future(batcher.submit({"id": i})))
        await asyncio.sleep(gap_s)
    await asyncio.gather(*submitted)


def test_while_the_queue_has_a_backlog_batches_linger_longer_and_fill() -> None:
    async def go() -> list[int]:
        broker = FakeBroker()
        batcher = Batcher("low", broker.publish, max_size=8, linger_s=0.01, backlog_linger_s=5.0)
        batcher.start()
        await batcher.submit({"id": "first"})  # the workers keep up: published after the short linger
        broker.waiting = 3  # from now on the broker reports messages waiting
        await batcher.submit({"id": "second"})  # this publish reads the backlog
        await _arrive_every(batcher, range(16), 0.02)
        return [len(jobs) for _, jobs in broker.batches]

    sizes = run(go())
    # Behind a backlog a batch fills to max_size, which at one job per 20 ms the 10 ms linger never would.
    assert sizes == [1, 1, 8, 8]


def test_without_a_backlog_the_short_linger_holds() -> None:
    async def go() -> list[int]:
        broker = FakeBroker()
        batcher = Batcher("low", broker.publish, max_size=8, linger_s=0.01, backlog_linger_s=5.0)
        batcher.start()
        await _arrive_every(batcher, range(6), 0.05)
        return [len(jobs) for _, jobs in broker.batches]

    assert run(go()) == [1] * 6


def test_a_full_set_of_slots_ends_every_backlog_linger() -> None:
    """With every BullMQ slot held no job can arrive to fill a batch: waiting longer would only stall."""

    async def go() -> tuple[float, list[tuple[str, int]]]:
        broker = FakeBroker()
        broker.waiting = 5  # behind a backlog from the first publish on
        slots = Slots(4)
        low = Batcher("low", broker.publish, max_size=10, linger_s=0.01, backlog_linger_s=30.0, slots=slots)
        normal = Batcher("normal", broker.publish, max_size=10, linger_s=0.01, backlog_linger_s=30.0, slots=slots)
        low.start()
        normal.start()
        await asyncio.gather(low.submit({"id": "first"}), normal.submit({"id": "first"}))  # both learn the backlog
        started = time.monotonic()
        submitted = [asyncio.ensure_future(low.submit({"id": i})) for i in range(2)]
        await asyncio.sleep(0.2)
        assert len(broker.batches) == 2  # lingering behind the backlog: 2 of 4 slots held
        submitted += [asyncio.ensure_future(normal.submit({"id": i})) for i in range(2)]
        await asyncio.gather(*submitted)
        assert slots.held == 0
        return time.monotonic() - started, sorted((queue, len(jobs)) for queue, jobs in broker.batches[2:])

    elapsed, batches = run(go())
    assert elapsed < 2.0
    assert batches == [("low", 2), ("normal", 2)]


def test_a_full_set_of_slots_keeps_the_configured_linger() -> None:
    """The base linger is the operator's: only the backlog's longer wait gives way to full slots."""

    async def go() -> float:
        broker = FakeBroker()
        batcher = Batcher("low", broker.publish, max_size=10, linger_s=0.3, slots=Slots(2))
        batcher.start()
        started = time.monotonic()
        await asyncio.gather(batcher.submit({"id": 1}), batcher.submit({"id": 2}))
        return time.monotonic() - started

    assert run(go()) >= 0.28


def test_the_bridge_lets_only_normal_and_low_linger_behind_a_backlog() -> None:
    bridge = Bridge(_config(linger_s=0.02, backlog_linger_s=0.3), publish=FakeBroker().publish)
    assert {name: (b.linger_s, b.backlog_linger_s) for name, b in bridge.batchers.items()} == {
        "high": (0.02, 0.02),
        "normal": (0.02, 0.3),
        "low": (0.02, 0.3),
    }


def _config(**changes: Any) -> BridgeConfig:
    base = {
        "redis_url": "redis://127.0.0.1:1/1",
        "broker_url": "redis://127.0.0.1:1/0",
        "queue_name": "crm-events",
        "prefix": "bull",
        "batch_size": 10,
        "linger_s": 0.01,
        "backlog_linger_s": 0.01,
        "concurrency": 10,
        "max_job_bytes": 2000,
        "lock_duration_ms": 5000,
        "stalled_interval_ms": 2000,
        "retry_max_s": 1.0,
        "shutdown_timeout_s": 5.0,
        "stats_interval_s": 10.0,
        "keep_completed": 100,
        "connection_check_s": 5.0,
    }
    return BridgeConfig(**{**base, **changes})


def test_bridge_process_routes_each_job_to_its_priority_batcher() -> None:
    jobs = [
        contact_job("contactPreference.updated", contact_payloads()["contactPreference.updated"]),
        contact_job("contact.created", contact_payloads()["contact.created"]),
        contact_job("contact.deleted", contact_payloads()["contact.deleted"]),
        message_job("email.opened", message_payloads()["email.opened"]),
        message_job("message.bounced", {**message_payloads()["message.bounced"], "bounceType": "??"}),  # rejected
        {"name": "nope", "data": "not an object"},  # rejected, unknown type
        contact_job("contact.updated", {**contact_payloads()["contact.updated"], "bio": "z" * 3000}),  # oversized
    ]

    async def go() -> tuple[Bridge, FakeBroker]:
        broker = FakeBroker()
        bridge = Bridge(_config(), publish=broker.publish)
        for batcher in bridge.batchers.values():
            batcher.start()
        await asyncio.gather(
            *(
                bridge.process(
                    SimpleNamespace(id=str(i), name=j["name"], timestamp=1765699200000, attemptsMade=0, data=j["data"]),
                    "t",
                )
                for i, j in enumerate(jobs)
            )
        )
        return bridge, broker

    bridge, broker = run(go())
    routed = {queue: sorted(j["name"] for j in batch) for queue, batch in broker.batches}
    assert routed == {
        "high": ["contactPreference.updated", "message.bounced"],
        "normal": ["contact.created", "contact.deleted", "contact.updated", "nope"],
        "low": ["email.opened"],
    }
    assert bridge.rejected == 3
    oversized = next(j for _, batch in broker.batches for j in batch if j["name"] == "contact.updated")
    assert "BRIDGE_MAX_JOB_BYTES" in oversized["rejection"]
    assert oversized["key"] == "evt_124"
