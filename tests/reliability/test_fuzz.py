"""Garbage in: at least 2,000 generated malformed jobs through the real bridge and workers.

Every one ends as a `rejected` inbox row with a readable reason; the worker never crashes and no
event ends `failed`; the valid events published between them are still applied. Jobs whose only
fault is an optional field (a bad email, phone, name or timestamp) are not malformed: they end
applied (or parked) with warnings, never rejected (partial acceptance).
"""

import sys
from collections import Counter

import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from messaging_events.contract.jobs import identity_of
from messaging_events.contract.routing import EventType, event_type_from_name
from messaging_events.models import InboundEvent
from tests.processes import Processes, bullmq_counts, publish_jobs, wait_for_quiescence
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
    kind = draw(st.integers(min_value=0, max_value=7))
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
    if kind == 5:  # nested junk where a scalar belongs
        nested = draw(st.lists(junk, min_size=1, max_size=3) | st.dictionaries(st.text(max_size=4), junk, min_size=1))
        return {"name": "contactPreference.updated", "data": {"payload": _contact_payload(i, smsOptIn=nested)}}
    if kind == 6:  # the job name and data.type disagree
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


@st.composite
def partial_job(draw: st.DrawFn) -> dict:
    """One job whose only fault is an optional field: accepted without it, with a warning."""
    i = draw(st.integers(min_value=0, max_value=10**9))
    kind = draw(st.integers(min_value=0, max_value=3))
    if kind == 0:  # bad emails
        return {"name": "contact.created", "data": {"payload": _contact_payload(i, email=draw(bad_emails))}}
    if kind == 1:  # bad phones
        return {"name": "contact.updated", "data": {"payload": _contact_payload(i, phoneNumber=draw(bad_phones))}}
    if kind == 2:  # bad timestamps: dropped (or, without a zone, read as UTC); the contact is unknown: parked
        payload = {"eventId": f"fz-{i}", "messageId": f"m{i}", "channel": "EMAIL", "sentAt": draw(bad_timestamps)}
        return {
            "name": "message.sent",
            "data": {"type": "message.sent", "identity": {"messagingContactId": "c"}, "payload": payload},
        }
    # huge names (below BRIDGE_MAX_JOB_BYTES, which would reject the whole job as oversized)
    size = draw(st.integers(min_value=201, max_value=10_000))
    return {"name": "contact.created", "data": {"payload": _contact_payload(i, firstName="x" * size)}}


def _draw_jobs(job_strategy: st.SearchStrategy, count: int) -> list[dict]:
    """`count` jobs drawn from `job_strategy`, each given its own identity (`_unique`)."""
    jobs: list[dict] = []

    @settings(
        max_examples=count // 20,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(job_strategy, min_size=20, max_size=20))
    def collect(batch: list[dict]) -> None:
        jobs.extend(batch)

    while len(jobs) < count:
        collect()
    return [_unique(job, n) for n, job in enumerate(jobs[:count])]


def generate_malformed_jobs(count: int) -> list[dict]:
    return _draw_jobs(malformed_job(), count)


PARTIAL_JOBS = 200
PARTIAL_SEQ_START = 1_000_000  # their eventIds and timestamps never meet the malformed jobs'


PARTIAL_CONTACT = {
    "name": "contact.created",
    "data": {"payload": {"eventId": "fz-partial-contact", "tenantId": "t-fuzz", "contactId": "c"}},
    "opts": {"timestamp": 1_765_699_200_000},
}


def generate_partial_jobs(count: int) -> list[dict]:
    jobs = _draw_jobs(partial_job(), count)
    return [_unique(job, PARTIAL_SEQ_START + n) for n, job in enumerate(jobs)]


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
    return {"name": job["name"], "data": data, **({"opts": job["opts"]} if "opts" in job else {})}


# A rejection without an eventId is identified with its job timestamp: the test sets it, to know it.
MALFORMED_TIMESTAMP_MS = 1_765_699_200_000


def _with_timestamp(job: dict, n: int) -> dict:
    return {**job, "opts": {"timestamp": MALFORMED_TIMESTAMP_MS + n}}


def _identity(job: dict) -> str:
    event_type = event_type_from_name(job["name"])
    name = event_type.value if event_type else job["name"]
    return identity_of(name, job["data"], job["opts"]["timestamp"])


def test_malformed_jobs_are_all_rejected_and_valid_ones_still_applied(processes: Processes) -> None:
    # The processes start while Hypothesis draws the jobs (tens of seconds of this process's CPU); nothing is
    # published before every one of them is ready.
    worker = processes.start_worker(wait=False)
    processes.start_beat(env=BEAT_ENV, wait=False)
    processes.start_bridge(env={"BRIDGE_MAX_JOB_BYTES": "16384"}, wait=False)
    malformed = [_with_timestamp(job, n) for n, job in enumerate(generate_malformed_jobs(MALFORMED_JOBS))]
    partial = [_with_timestamp(job, PARTIAL_SEQ_START + n) for n, job in enumerate(generate_partial_jobs(PARTIAL_JOBS))]
    valid = known_stream("fv", 40)
    mixed, step = [], len(malformed) // len(valid.jobs)
    for n, job in enumerate(valid.jobs):
        mixed.extend(malformed[n * step : (n + 1) * step])
        mixed.extend(partial[n * 5 : (n + 1) * 5])
        mixed.append(job)
    mixed.extend(malformed[len(valid.jobs) * step :])
    mixed.extend(partial[len(valid.jobs) * 5 :])
    mixed.append(PARTIAL_CONTACT)  # the contact the partial message events name: they unpark and apply

    processes.wait_ready()
    pool = {child.pid for child in psutil.Process(worker.pid).children()}
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
    # A bad optional field only: applied with its warning, never rejected.
    partial_rows = InboundEvent.objects.filter(idempotency_key__in={_identity(job) for job in partial})
    assert partial_rows.count() == len(partial)
    outcomes = Counter(partial_rows.values_list("status", flat=True))
    assert set(outcomes) == {"applied"}, outcomes
    assert not partial_rows.filter(warnings=[]).exists(), "every partially accepted event names what it dropped"
    assert worker.alive and "Traceback" not in worker.output() and "WorkerLostError" not in worker.output()
    assert {child.pid for child in psutil.Process(worker.pid).children()} == pool, "no pool child died"
    assert_invariants(valid)
    assert bullmq_counts()["completed"] == len(mixed)
    report(
        "fuzz",
        malformed_jobs=len(malformed),
        distinct_identities=len(expected),
        partial_jobs=len(partial),
        partial_outcomes=dict(outcomes),
        valid_events=valid.size,
    )


# --- Hostile content the Node client really produces --------------------------------------------

HOSTILE_JOBS = 600
# A lone surrogate survives JSON.stringify as an escape; NUL is legal JSON text.
hostile_text = st.sampled_from(["\ud800", "a\udfffb", "\x00", "nul\x00inside", "\ud83d", "ok"]) | st.text(max_size=12)
edge_timestamps = st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:59:59.999999Z",
        "2025-12-14T08:00:00+05:45",
        "2025-12-14T08:00:00+23:59",
        "2025-12-14T08:00:00-00:30",
        "2025-12-14T08:00:00+05:30:15",
        "2025-12-14T08:00:00.123456789Z",
        "2025-02-29T00:00:00Z",
        "2024-02-29T24:00:00Z",
    ]
)
huge_numbers = st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 2**64, 1e21, 5e-324, -(2**63)])
job_timestamps = st.sampled_from([1.5, -1, 0, 8.64e15 + 1, 1e20, 2**53, 253402300800000])


def _nested(depth: int) -> object:
    value: object = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


def _wrong(value_strategy: st.SearchStrategy) -> st.SearchStrategy:
    return value_strategy | not_a_string | huge_numbers


CONTACT_FIELDS = ("eventId", "tenantId", "contactId", "email", "phoneNumber", "firstName", "lastName", "smsOptIn")
MESSAGE_FIELDS = ("eventId", "messageId", "channel", "campaignId", "sentAt")


@st.composite
def hostile_job(draw: st.DrawFn) -> dict:
    """One job as the Node client can publish it, with content chosen to break parsers and encoders."""
    i = draw(st.integers(min_value=0, max_value=10**9))
    kind = draw(st.integers(min_value=0, max_value=6))
    payload = _contact_payload(i, email=f"p{i}@example.com", smsOptIn=True)
    name = draw(st.sampled_from(CONTACT_NAMES))
    job: dict = {"name": name, "data": {"payload": payload}}
    if kind == 0:  # lone surrogates and NULs in any field, names included
        field = draw(st.sampled_from(("firstName", "lastName", "contactId", "tenantId", "email", "extra")))
        payload[field] = draw(hostile_text)
        if draw(st.booleans()):
            job["name"] = name + draw(st.sampled_from(["\x00", "\x00x"]))
    elif kind == 1:  # calendar edges and odd offsets where a message event states its time
        message = {"eventId": f"fz-{i}", "messageId": f"m{i}", "channel": "EMAIL", "sentAt": draw(edge_timestamps)}
        job = {
            "name": "message.sent",
            "data": {"type": "message.sent", "identity": {"messagingContactId": f"fz-c{i}"}, "payload": message},
        }
    elif kind == 2:  # the job's own timestamp at the edges (contact events take their time from it)
        job["opts"] = {"timestamp": draw(job_timestamps)}
    elif kind == 3:  # very large numbers, in known and unknown fields
        payload[draw(st.sampled_from(("smsOptIn", "contactId", "extra", "firstName")))] = draw(huge_numbers)
    elif kind == 4:  # deep nesting, within and beyond what the parsers take
        payload["extra"] = _nested(draw(st.sampled_from([10, 70, 500, 2500])))
    elif kind == 5:  # wrong types in every field of a contact event
        for field in CONTACT_FIELDS:
            payload[field] = draw(_wrong(st.sampled_from([payload.get(field)])))
    else:  # wrong types in every field of a message event
        message = {field: draw(_wrong(hostile_text)) for field in MESSAGE_FIELDS}
        job = {
            "name": "message.sent",
            "data": {
                "type": "message.sent",
                "identity": {"messagingContactId": draw(_wrong(hostile_text))},
                "payload": message,
            },
        }
    return job


def generate_hostile_jobs(count: int) -> list[dict]:
    return _draw_jobs(hostile_job(), count)


def test_hostile_content_never_fails_a_job_and_every_job_gets_one_inbox_row(processes: Processes) -> None:
    worker = processes.start_worker(wait=False)  # starting while the jobs are drawn
    processes.start_bridge(wait=False)
    hostile = generate_hostile_jobs(HOSTILE_JOBS)
    valid = known_stream("hv", 10)
    processes.wait_ready()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # only so that this process can write the deepest jobs as JSON
    try:
        publish_jobs(hostile + valid.jobs)
    finally:
        sys.setrecursionlimit(limit)
    # Not `settle()`: hostile message events name contacts that never arrive, so some stay parked by design.
    wait_for_quiescence(timeout=300, stable_s=1.5)

    counts = bullmq_counts()
    assert counts["failed"] == 0 and counts["completed"] == len(hostile) + valid.size, counts
    rows = InboundEvent.objects.exclude(idempotency_key__startswith="hv-")
    assert sum(rows.values_list("deliveries", flat=True)) == len(hostile), "every job reached the inbox"
    assert rows.count() == len(hostile), "one inbox row per job"
    assert not InboundEvent.objects.filter(status__in=["failed", "received"]).exists()
    assert all(error.strip() for error in rows.filter(status="rejected").values_list("error", flat=True))
    assert worker.alive and "Traceback" not in worker.output()
    assert_invariants(valid)
    statuses = dict(Counter(rows.values_list("status", flat=True)))
    report("hostile", jobs=len(hostile), statuses=statuses)
