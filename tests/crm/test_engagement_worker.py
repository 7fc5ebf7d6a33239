"""The engagement refresh through a real worker: an engagement event schedules the coalesced drain
after commit, the worker runs it, and the score is the documented formula. No beat runs here, so
nothing but the event's own scheduling can have refreshed it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.models import PendingScoreRefresh, Profile
from messaging_events.models import InboundEvent
from tests.factories import contact_created_job, email_opened_job
from tests.processes import Processes, publish_jobs, wait_until

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]


def test_an_open_is_scored_by_the_refresh_the_event_scheduled(processes: Processes) -> None:
    opened_at = (timezone.now() - timedelta(days=3)).replace(microsecond=0)
    jobs = [
        contact_created_job(contact_id="eng-c1", email="eng@example.com"),
        email_opened_job(contact_id="eng-c1", message_id="eng-m1", opened_at=opened_at, event_id="eng-open"),
    ]
    worker = processes.start_worker(env={"ENGAGEMENT_REFRESH_DELAY_S": "1"}, wait=False)
    processes.start_bridge(wait=False)
    processes.wait_ready()
    # The contact first: an open racing its contact.created would park, and only beat's sweep unparks that.
    for applied, job in enumerate(jobs, start=1):
        publish_jobs([{"name": job["name"], "data": job["data"]}])
        wait_until(lambda n=applied: InboundEvent.objects.filter(status="applied").count() == n, 60)

    def scored() -> Profile | None:
        profile = Profile.objects.filter(contact_links__messaging_contact_id="eng-c1").first()
        return profile if profile and profile.engagement_scored_at else None

    profile = wait_until(scored, 90, message="the scheduled refresh to score the profile")
    wait_until(lambda: not PendingScoreRefresh.objects.exists(), 30, message="the pending request to be drained")

    age_days = (profile.engagement_scored_at - opened_at).total_seconds() / 86400
    assert profile.engagement_score == pytest.approx(5 * 0.5 ** (age_days / 30), abs=1e-4)  # ~4.66
    assert profile.engagement_breakdown["types"] == {
        "EMAIL_OPENED": {"count": 1, "weight": 5.0, "points": profile.engagement_score}
    }
    assert "Task crm.refresh_pending_engagement_scores[" in worker.output()
