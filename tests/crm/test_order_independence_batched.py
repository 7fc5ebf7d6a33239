"""Property: the set-based path reaches the same final state as in-order per-event application.

The stream of `test_order_independence` (contact, consent, message and engagement events for three
contacts, two of them one person) gets extra copies of some events, placed next to their original
(a duplicate inside one batch) or at the end (a duplicate in a later batch). It is permuted and applied
through `batch_apply.apply_batch`, what the worker task runs, in batches of random sizes from 1 to 64.
The expected state is the same multiset of jobs applied one by one, in occurred-at order.

Compared table by table: everything `test_order_independence.snapshot` compares per profile, the
message and engagement activities with their data, and the inbox (per identity: type, status and
number of deliveries).
"""

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.models import Activity, Profile
from messaging_events.models import InboundEvent
from messaging_events.services.batch_apply import apply_batch, fallback_batches
from tests.crm.test_order_independence import final_state, snapshot, streams
from tests.factories import process

pytestmark = pytest.mark.django_db

MESSAGE_ACTIVITY_TYPES = ("MESSAGE_SENT", "MESSAGE_DELIVERED", "EMAIL_OPENED", "EMAIL_CLICKED")


def tables() -> dict:
    """`snapshot()` plus the message activities' contents and the inbox."""
    state = snapshot()
    for profile in Profile.objects.prefetch_related("contact_links"):
        key = tuple(sorted(link.messaging_contact_id for link in profile.contact_links.all()))
        state[key]["message_activities"] = sorted(
            (a.type, a.occurred_at.isoformat(), sorted(a.data.items()))
            for a in Activity.objects.filter(profile=profile, type__in=MESSAGE_ACTIVITY_TYPES)
        )
    state["inbox"] = sorted(
        InboundEvent.objects.values_list("tenant_ref", "idempotency_key", "event_type", "status", "deliveries")
    )
    return state


def _apply_in_batches(jobs: list, sizes: list[int]) -> None:
    start = 0
    for size in sizes:
        if start >= len(jobs):
            return
        apply_batch(jobs[start : start + size])
        start += size
    if start < len(jobs):
        apply_batch(jobs[start:])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(stream=streams(), data=st.data())
def test_batched_application_equals_in_order_per_event_application(stream: list[tuple], data: st.DataObject) -> None:
    permutation = data.draw(st.permutations(range(len(stream))), label="arrival order")
    arrival = [stream[i] for i in permutation]
    copies = data.draw(st.lists(st.tuples(st.integers(0, len(arrival) - 1), st.booleans()), max_size=8), label="copies")
    for index, adjacent in sorted(copies, reverse=True):
        if adjacent:  # usually in the same batch as its original
            arrival.insert(index + 1, arrival[index])
        else:  # in a later batch
            arrival.append(arrival[index])
    sizes = data.draw(st.lists(st.integers(1, 64), min_size=1, max_size=len(arrival)), label="batch sizes")

    in_order = [job for _, job in sorted(arrival, key=lambda pair: pair[0])]
    expected = final_state(lambda: [process(job) for job in in_order], tables)
    fallbacks = fallback_batches()
    actual = final_state(lambda: _apply_in_batches([job for _, job in arrival], sizes), tables)
    assert fallback_batches() == fallbacks  # the set-based path itself was tested, not its fallback

    assert Counter(status for *_, status, _ in expected["inbox"]) == Counter(
        status for *_, status, _ in actual["inbox"]
    )
    assert set(actual) == set(expected)
    for table in expected:
        assert actual[table] == expected[table], table
