"""Concurrent workers: identity resolution is serialised per contactId/email/phone, so the same person
arriving through two contacts at once still ends up as one profile; per-event query budgets."""

import threading

import pytest
from django.db import connection

from crm.models import ContactLink, Profile
from tests.factories import (
    at,
    contact_created_job,
    email_opened_job,
    message_sent_job,
    process,
)


def _worker(barrier: threading.Barrier, errors: list, contact_id: str, email: str) -> None:
    try:
        barrier.wait()
        process(contact_created_job(contact_id=contact_id, email=email, phone=None, timestamp=at(0)))
    except BaseException as exc:  # reported by the test
        errors.append(exc)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_same_email_from_two_workers_at_once_makes_one_profile() -> None:
    for round_ in range(5):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        email = f"same{round_}@example.com"
        threads = [threading.Thread(target=_worker, args=(barrier, errors, f"r{round_}-{n}", email)) for n in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        profiles = Profile.objects.filter(email=email)
        assert profiles.count() == 1
        assert ContactLink.objects.filter(profile=profiles.get()).count() == 2


@pytest.mark.django_db
def test_message_events_stay_within_a_query_budget(django_assert_max_num_queries) -> None:
    process(contact_created_job(timestamp=at(0)))
    # The inbox itself needs about 8 statements per event; the CRM part adds a handful, never per-row loops.
    with django_assert_max_num_queries(16):
        process(message_sent_job())
    with django_assert_max_num_queries(16):
        process(email_opened_job())
