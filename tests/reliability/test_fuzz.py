"""Garbage in: at least 2,000 generated malformed jobs through the real bridge and workers.

Every one ends as a `rejected` inbox row with a readable reason; the worker never crashes and no
event ends `failed`; the valid events published between them are still applied.
"""

import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from messaging_events.contract.jobs import identity_of
from messaging_events.contract.routing import EventType, event_type_from_name
from messaging_events.models import InboundEvent
from tests.processes import Processes, bullmq_counts, publish_jobs
from tests.reliability.stream import BEAT_ENV, assert_invariants, known_stream, report, settle

pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]

MALFORMED_JOBS = 2_000
KNOWN_NAMES = [t.value for t in EventType]
CONTACT_NAMES = ["contact.created", "contact.updated", "contactPreference.updated", "contact.deleted"]
MESSAGE_NAMES = [n for n in KNOWN_NAMES if n not in CONTACT_NAMES]

# Numbers a JavaScript producer sends back unchanged: the pipeline hashes what the producer sent, so
# large integers and floats (re-spelled by JSON.stringify) would change the identity this test expects.
js_safe_int = st.integers(min_value=-(2**53), max_value=2**53)
junk = st.recursive(
    st.none() | st.booleans() | js_safe_int | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
not_a_string = (
    st.none()
    | st.booleans()
    | js_safe_int
    | st.lists(junk, max_size=3)
    | st.dictionaries(st.text(max_size=5), junk, max_size=3)
)
bad_emails = st.sampled_from(["not-an-email", "a@", "@example.com", "a@@b.com", "spaces in@x.com", "x@-bad-.com"])
bad_phones = st.sampled_from(["12", "abc", "+999999999999999999", "0000", "+27 12", "☎️"])
bad_timestamps = (
    st.sampled_from(
        ["yesterday", "2025-13-45T00:00:00Z", "2025-12-14T08:00:00", "1999-01-01T00:00:00Z", "9999-01-01T00:00:00Z", ""]
    )
    | js_safe_int
    | st.lists(js_safe_int, max_size=2)
)


def _contact_payload(i: int, **overrides: object) -> dict:
    return {"eventId": f"fz-{i}", "tenantId": "t-fuzz", "contactId": f"fz-c{i}", **overrides}


@st.composite
def malformed_job(draw: st.DrawFn) -> dict:
    """One job that the contract must refuse, whichever way it is broken."""
    i = draw(st.integers(min_value=0, max_value=10**9))
    kind = draw(st.integers(min_value=0, max_value=11))
    name = draw(st.sampled_from(KNOWN_NAMES))
    if kind == 0:  # unknown event names
        unknown = draw(st.text(min_size=1, max_size=40).filter(lambda n: event_type_from_name(n) is None))
        return {"name": unknown, "data": {"payload": _contact_payload(i), "junk": draw(junk)}}
    if kind == 1:  # data that is not an object: strings, numbers, arrays, null
        return {
            "name": name,
            "data": draw(st.text(max_size=50) | js_safe_int | st.lists(junk, max_size=3) | st.none()),
        }
    if kind == 2:  # no payload object
        return {"name": name, "data": {"type": name, "payload": draw(not_a_string), "n": i}}
    if kind == 3:  # missing required fields
        return {
            "name": draw(st.sampled_from(CONTACT_NAMES)),
            "data": {"payload": {"eventId": f"fz-{i}", "x": draw(junk)}},
        }
    if kind == 4:  # wrong types for ids
        payload = _contact_payload(i, contactId=draw(not_a_string))
        return {"name": draw(st.sampled_from(CONTACT_NAMES)), "data": {"payload": payload}}
    if kind == 5:  # bad emails
        return {"name": "contact.created", "data": {"payload": _contact_payload(i, email=draw(bad_emails))}}
    if kind == 6:  # bad phones
        return {"name": "contact.updated", "data": {"payload": _contact_payload(i, phoneNumber=draw(bad_phones))}}
    if kind == 7:  # bad timestamps
        payload = {"eventId": f"fz-{i}", "messageId": f"m{i}", "channel": "EMAIL", "sentAt": draw(bad_timestamps)}
        return {
            "name": "message.sent",
            "data": {"type": "message.sent", "identity": {"messagingContactId": "c"}, "payload": payload},
        }
    if kind == 8:  # huge strings
        size = draw(st.integers(min_value=201, max_value=20_000))
        return {"name": "contact.created", "data": {"payload": _contact_payload(i, firstName="x" * size)}}
    if kind == 9:  # nested junk where a scalar belongs
        nested = draw(st.lists(junk, min_size=1, max_size=3) | st.dictionaries(st.text(max_size=4), junk, min_size=1))
        return {"name": "contactPreference.updated", "data": {"payload": _contact_payload(i, smsOptIn=nested)}}
    if kind == 10:  # the job name and data.type disagree
        other = draw(st.sampled_from([n for n in MESSAGE_NAMES if n != name] or MESSAGE_NAMES))
        return {
            "name": name,
            "data": {
                "type": other,
                "identity": {"messagingContactId": "c"},
                "payload": {"eventId": f"fz-{i}", "messageId": f"m{i}"},
            },
        }
    # opt-in flags that are not booleans
    return {
        "name": "contactPreference.updated",
        "data": {"payload": _contact_payload(i, emailOptIn=draw(st.sampled_from(["yes", 1, "true", 0])))},
    }


def generate_malformed_jobs(count: int) -> list[dict]:
    jobs: list[dict] = []

    @settings(
        max_examples=count // 20,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(malformed_job(), min_size=20, max_size=20))
    def collect(batch: list[dict]) -> None:
        jobs.extend(batch)

    while len(jobs) < count:
        collect()
    return [_unique(job, n) for n, job in enumerate(jobs[:count])]


def _unique(job: dict, n: int) -> dict:
    """Give each job its own identity, so that each must end as its own inbox row.

    A top-level sequence number is ignored by the contract (the data stays just as malformed) and
    changes the content hash; a payload `eventId`, where there is one, becomes unique too.
    """
    data = job["data"]
    if isinstance(data, dict):
        data = {**data, "fuzzSeq": n}
        if isinstance(data.get("payload"), dict) and "eventId" in data["payload"]:
            data["payload"] = {**data["payload"], "eventId": f"fz-{n}"}
    return {"name": job["name"], "data": data}


def _identity(job: dict) -> str:
    event_type = event_type_from_name(job["name"])
    return identity_of(event_type.value if event_type else job["name"], job["data"])


def test_malformed_jobs_are_all_rejected_and_valid_ones_still_applied(processes: Processes) -> None:
    malformed = generate_malformed_jobs(MALFORMED_JOBS)
    valid = known_stream("fv", 40)
    mixed, step = [], len(malformed) // len(valid.jobs)
    for n, job in enumerate(valid.jobs):
        mixed.extend(malformed[n * step : (n + 1) * step])
        mixed.append(job)
    mixed.extend(malformed[len(valid.jobs) * step :])

    worker = processes.start_worker()
    pool = {child.pid for child in psutil.Process(worker.pid).children()}
    processes.start_beat(env=BEAT_ENV)
    processes.start_bridge(env={"BRIDGE_MAX_JOB_BYTES": "16384"})
    publish_jobs(mixed)
    settle(timeout=300)

    expected = {_identity(job) for job in malformed}
    rows = InboundEvent.objects.filter(status="rejected")
    rejected = dict(rows.values_list("idempotency_key", "error"))
    missing = [job for job in malformed if _identity(job) not in rejected]
    statuses = dict(InboundEvent.objects.filter(idempotency_key__in=expected).values_list("idempotency_key", "status"))
    assert not missing, f"{len(missing)} malformed jobs without a rejected row, e.g. " + "; ".join(
        f"{str(job)[:300]} -> {statuses.get(_identity(job))}" for job in missing[:3]
    )
    # Only non-object data without a sequence number can repeat; every job still reached the inbox.
    assert len(expected) >= 0.9 * len(malformed)
    deliveries = sum(rows.filter(idempotency_key__in=expected).values_list("deliveries", flat=True))
    assert deliveries == len(malformed)
    reasons = [rejected[key] for key in expected]
    assert all(reason.strip() for reason in reasons), "every rejection says why"
    unreadable = [r for r in reasons if len(r) > 2000 or "Traceback" in r or r.startswith(("internal", "database"))]
    assert not unreadable, unreadable[:3]
    assert not InboundEvent.objects.filter(status="failed").exists()
    assert worker.alive and "Traceback" not in worker.output() and "WorkerLostError" not in worker.output()
    assert {child.pid for child in psutil.Process(worker.pid).children()} == pool, "no pool child died"
    assert_invariants(valid)
    assert bullmq_counts()["completed"] == len(mixed)
    report("fuzz", malformed_jobs=len(malformed), distinct_identities=len(expected), valid_events=valid.size)
