"""Property: the set-based path reaches the same final state as in-order per-event application.

The stream of `test_order_independence` (contact, consent, message and engagement events for five
contacts in one tenant, some of them also in a second) gets extra copies of some events, placed next to their original
(a duplicate inside one batch) or at the end (a duplicate in a later batch). It is permuted and applied
through `batch_apply.apply_batch`, what the worker task runs, in batches of random sizes from 1 to 64.
The expected state is the same multiset of jobs applied one by one, in occurred-at order.

Compared table by table: everything `test_order_independence.tables` compares: per profile its fields,
consent, ledger, interactions, activities with their times and data, and the inbox (per identity: type,
status, error and number of deliveries).
"""

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messaging_events.services.batch_apply import apply_batch, fallback_batches
from tests.crm.test_order_independence import final_state, streams, tables
from tests.factories import process

pytestmark = pytest.mark.django_db


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

    assert Counter(row[3] for row in expected["inbox"]) == Counter(row[3] for row in actual["inbox"])
    assert set(actual) == set(expected)
    for table in expected:
        assert actual[table] == expected[table], table
