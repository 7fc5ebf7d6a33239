"""The in-flight register against the real broker Redis: a message kombu lost is published again,
and nothing that is still queued, held by a worker, or finished ever is.

The loss is made the way kombu's Redis transport makes it: a consumer's BRPOP takes the message off
its queue and the consumer dies before copying it into `unacked` (here: an RPOP nobody puts back).
"""

import base64
import json
import threading
import time

import pytest
from django.test import override_settings

from messaging_events import broker, inflight_register
from messaging_events.models import InboundEvent
from messaging_events.publishing import publish_batch
from messaging_events.services import inflight
from messaging_events.tasks import apply_event_batch
from tests.messaging_events.samples import contact_payloads

pytestmark = pytest.mark.django_db

LATER = 3600.0  # seconds past the grace period, for passes that must see every batch as a candidate


def _jobs(prefix: str) -> list[dict]:
    payload = contact_payloads(tenant="t-inflight", contact=f"c-{prefix}", prefix=prefix)["contact.created"]
    return [
        {
            "id": f"job-{prefix}",
            "name": "contact.created",
            "timestamp": int(time.time() * 1000),
            "attemptsMade": 0,
            "data": {"payload": payload},
        }
    ]


def _queued(broker_redis, queue: str = "normal") -> list[tuple[str, list]]:
    """(task id, jobs) of every message in the queue, consumer end first."""
    messages = []
    for key in broker.queue_keys(queue):
        for raw in reversed(broker_redis.lrange(key, 0, -1)):
            envelope = json.loads(raw)
            args, _kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
            messages.append((envelope["headers"]["id"], args[0]))
    return messages


def _lose_next_message(broker_redis, queue: str = "normal") -> bytes:
    """Take the next message off the queue the way a consumer does, and never hand it on."""
    raw = broker_redis.rpop(queue)
    assert raw is not None
    return raw


def _hold_as_unacked(broker_redis, raw: bytes, tag: str) -> None:
    """Put a message where kombu keeps one a worker received and has not acknowledged."""
    broker_redis.hset(broker.unacked_key(), tag, json.dumps([json.loads(raw), "normal", "normal"]))


def _reconcile(calls: list[tuple[str, int]]) -> inflight.ReconcileReport:
    """One pass long after the grace period, publishing through the real path and noting each call."""

    def republish(jobs: list, *, queue: str, task_id: str, republished: int) -> None:
        calls.append((task_id, republished))
        publish_batch(jobs, queue=queue, task_id=task_id, republished=republished)

    return inflight.reconcile(republish, now=time.time() + LATER)


def test_a_published_batch_is_tracked_until_its_task_returns(broker_redis) -> None:
    jobs = _jobs("done")
    publish_batch(jobs, queue="normal", task_id="task-done")
    assert _queued(broker_redis) == [("task-done", jobs)]
    assert inflight_register.figures().batches == 1

    apply_event_batch.apply(args=[jobs], task_id="task-done")

    assert InboundEvent.objects.get(idempotency_key="done_123").status == "applied"
    assert inflight_register.figures() == inflight_register.RegisterFigures(batches=0, oldest_age_s=None)
    assert broker_redis.hlen(inflight_register.BATCHES_KEY) == broker_redis.hlen(inflight_register.QUEUES_KEY) == 0


def test_publishing_reports_the_messages_already_waiting_in_the_queue(broker_redis) -> None:
    """The bridge lingers longer while this is above zero (messaging_events.bridge.batcher)."""
    assert [publish_batch(_jobs(f"w{n}"), queue="low", task_id=f"task-w{n}") for n in range(3)] == [0, 1, 2]
    broker_redis.lpush(broker.queue_keys("low")[-1], b"{}")  # a message on a priority step's list counts too
    assert publish_batch(_jobs("w3"), queue="low", task_id="task-w3") == 4
    assert publish_batch(_jobs("n0"), queue="normal", task_id="task-n0") == 0  # each queue its own backlog


def test_a_batch_message_shows_a_summary_not_the_contacts_data(broker_redis) -> None:
    jobs = [*_jobs("s1"), {**_jobs("s2")[0], "id": "job-s2", "name": "contact.deleted"}]
    publish_batch(jobs, queue="normal", task_id="task-summary")
    headers = json.loads(broker_redis.lindex("normal", 0))["headers"]
    assert headers["argsrepr"] == "2 jobs [job-s1..job-s2]: 1 contact.created, 1 contact.deleted"
    email = jobs[0]["data"]["payload"]["email"]
    assert email in json.dumps(jobs)
    assert email not in json.dumps(headers)  # what Flower shows carries no contact data


def test_a_batch_the_broker_lost_is_published_again_after_two_passes(broker_redis) -> None:
    jobs = _jobs("lost")
    publish_batch(jobs, queue="normal", task_id="task-lost")
    _lose_next_message(broker_redis)
    republished: list[tuple[str, int]] = []

    first = _reconcile(republished)
    assert (first.candidates, first.suspects, first.republished) == (1, 1, [])
    assert _queued(broker_redis) == []

    second = _reconcile(republished)
    assert second.republished == ["task-lost"]
    assert republished == [("task-lost", 1)]
    assert _queued(broker_redis) == [("task-lost", jobs)]
    assert broker_redis.hlen(inflight_register.SUSPECTS_KEY) == 0
    assert json.loads(broker_redis.hget(inflight_register.BATCHES_KEY, "task-lost"))["republished"] == 1


def test_two_passes_at_once_publish_a_lost_batch_once(broker_redis, monkeypatch) -> None:
    """Beat's schedule can start a pass while the last still runs, in another worker child: both see the
    same suspect, and only the pass that claims it (removes it from the suspects) publishes it."""
    publish_batch(_jobs("twice"), queue="normal", task_id="task-twice")
    _lose_next_message(broker_redis)
    republished: list[tuple[str, int]] = []
    assert _reconcile(republished).suspects == 1

    both_searched = threading.Barrier(2, timeout=10)
    unacked_task_ids = inflight._unacked_task_ids

    def after_both_passes_read_the_suspects(client):
        both_searched.wait()
        return unacked_task_ids(client)

    monkeypatch.setattr(inflight, "_unacked_task_ids", after_both_passes_read_the_suspects)
    reports: list[inflight.ReconcileReport] = []
    passes = [threading.Thread(target=lambda: reports.append(_reconcile(republished))) for _ in range(2)]
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join(timeout=20)

    assert sorted(len(report.republished) for report in reports) == [0, 1]
    assert republished == [("task-twice", 1)]
    assert [task_id for task_id, _ in _queued(broker_redis)] == ["task-twice"]


def test_queued_batches_are_never_published_again(broker_redis) -> None:
    for n in range(3):
        publish_batch(_jobs(f"q{n}"), queue="normal", task_id=f"task-q{n}")
    republished: list[tuple[str, int]] = []

    reports = [_reconcile(republished) for _ in range(3)]

    # All tracked at or after the oldest queued message: known to be queued without reading the queue.
    assert [(r.candidates, r.queued, r.searched, r.suspects) for r in reports] == [(3, 3, 0, 0)] * 3
    assert republished == []
    assert [task_id for task_id, _ in _queued(broker_redis)] == ["task-q0", "task-q1", "task-q2"]


def test_a_requeued_batch_behind_newer_ones_is_found_by_the_search(broker_redis, monkeypatch) -> None:
    monkeypatch.setattr(inflight, "HEAD_PROBE", 1)  # the older batch is beyond the probe at the head
    publish_batch(_jobs("old"), queue="normal", task_id="task-old")
    publish_batch(_jobs("new"), queue="normal", task_id="task-new")
    # A worker took the older one and gave it back to the far end (reject with requeue does LPUSH).
    broker_redis.lpush("normal", _lose_next_message(broker_redis))
    assert [task_id for task_id, _ in _queued(broker_redis)] == ["task-new", "task-old"]
    republished: list[tuple[str, int]] = []

    reports = [_reconcile(republished) for _ in range(2)]

    assert [(r.queued, r.searched, r.suspects) for r in reports] == [(2, 1, 0)] * 2
    assert republished == []


def test_a_batch_a_worker_holds_is_never_published_again(broker_redis) -> None:
    publish_batch(_jobs("held"), queue="normal", task_id="task-held")
    _hold_as_unacked(broker_redis, _lose_next_message(broker_redis), tag="tag-held")
    republished: list[tuple[str, int]] = []

    reports = [_reconcile(republished) for _ in range(2)]

    assert [(r.unacked, r.suspects) for r in reports] == [(1, 0)] * 2
    assert republished == []


def test_a_suspect_seen_again_in_a_worker_is_cleared(broker_redis) -> None:
    publish_batch(_jobs("late"), queue="normal", task_id="task-late")
    raw = _lose_next_message(broker_redis)
    republished: list[tuple[str, int]] = []
    assert _reconcile(republished).suspects == 1

    _hold_as_unacked(broker_redis, raw, tag="tag-late")  # it was only between the queue and the hash
    second = _reconcile(republished)

    assert (second.unacked, second.suspects, second.republished) == (1, 0, [])
    assert republished == []
    assert broker_redis.hlen(inflight_register.SUSPECTS_KEY) == 0


def test_within_the_grace_period_nothing_is_looked_at(broker_redis) -> None:
    publish_batch(_jobs("fresh"), queue="normal", task_id="task-fresh")
    _lose_next_message(broker_redis)
    report = inflight.reconcile(lambda *a, **k: pytest.fail("republished within the grace period"))
    assert report.candidates == 0
    assert broker_redis.hlen(inflight_register.SUSPECTS_KEY) == 0


@override_settings(INFLIGHT_MAX_REPUBLISH=1)
def test_a_batch_lost_more_often_than_allowed_ends_failed_and_replayable(broker_redis) -> None:
    jobs = _jobs("cursed")
    publish_batch(jobs, queue="normal", task_id="task-cursed")
    republished: list[tuple[str, int]] = []
    for _ in range(2):  # lost, found missing twice, published again; then the same once more
        _lose_next_message(broker_redis)
        _reconcile(republished)
        _reconcile(republished)

    assert republished == [("task-cursed", 1)]
    row = InboundEvent.objects.get(idempotency_key="cursed_123")
    assert row.status == "failed"
    assert row.error == "lost by the broker and published again 1 times without finishing"
    assert inflight_register.figures().batches == 0
    assert _queued(broker_redis) == []
