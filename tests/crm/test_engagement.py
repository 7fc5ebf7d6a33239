"""Engagement score: the documented formula, its breakdown, coalesced refreshes, segments on score change."""

from datetime import timedelta

import pytest
from django.utils import timezone

from crm.models import Activity, ActivityType, PendingScoreRefresh, Profile, Segment, SegmentMembership
from crm.services import engagement
from crm.services.engagement import (
    engagement_pending_drain,
    engagement_refresh_request,
    engagement_score_refresh,
    engagement_scores_refresh,
)
from crm.services.tenants import tenant_get_or_create
from crm.tasks import refresh_pending_engagement_scores
from tests.factories import BASE_TIME

pytestmark = pytest.mark.django_db

NOW = BASE_TIME + timedelta(days=100)


def _profile() -> Profile:
    return Profile.objects.create(tenant=tenant_get_or_create("t1"))


def _activity(profile: Profile, type: str, days_ago: float) -> None:
    Activity.objects.create(
        tenant_id=profile.tenant_id, profile=profile, type=type, occurred_at=NOW - timedelta(days=days_ago)
    )


def test_formula_weights_and_half_life() -> None:
    profile = _profile()
    _activity(profile, ActivityType.EMAIL_OPENED, 30)  # 5 points, one half-life ago: 2.5
    _activity(profile, ActivityType.EMAIL_CLICKED, 0)  # 15
    _activity(profile, ActivityType.SMS_REPLIED, 60)  # 25, two half-lives: 6.25
    _activity(profile, ActivityType.MESSAGE_SENT, 0)  # not engagement: 0
    _activity(profile, ActivityType.EMAIL_OPENED, -1)  # in the future (clock skew): not more than full weight
    assert engagement_score_refresh(profile=profile, now=NOW) == pytest.approx(28.75)
    profile.refresh_from_db()
    assert profile.engagement_score == pytest.approx(28.75)
    assert profile.engagement_scored_at == NOW
    breakdown = profile.engagement_breakdown
    assert breakdown["half_life_days"] == 30.0
    assert breakdown["computed_at"] == NOW.isoformat()
    assert breakdown["types"] == {
        "EMAIL_CLICKED": {"count": 1, "weight": 15.0, "points": 15.0},
        "EMAIL_OPENED": {"count": 2, "weight": 5.0, "points": 7.5},
        "SMS_REPLIED": {"count": 1, "weight": 25.0, "points": 6.25},
    }


def test_capped_at_100() -> None:
    profile = _profile()
    for _ in range(10):
        _activity(profile, ActivityType.SMS_REPLIED, 0)
    assert engagement_score_refresh(profile=profile, now=NOW) == 100.0
    profile.refresh_from_db()
    assert (profile.engagement_breakdown["uncapped_total"], profile.engagement_breakdown["cap"]) == (250.0, 100.0)


def test_no_activity_scores_zero() -> None:
    profile = _profile()
    assert engagement_score_refresh(profile=profile, now=NOW) == 0.0
    assert Profile.objects.get().engagement_breakdown["types"] == {}


def test_requests_coalesce_into_one_row_and_one_drain() -> None:
    profile, other = _profile(), _profile()
    for _ in range(5):
        engagement_refresh_request(profile_id=profile.pk)
    engagement_refresh_request(profile_id=other.pk)
    assert PendingScoreRefresh.objects.count() == 2
    Activity.objects.create(
        tenant_id=profile.tenant_id, profile=profile, type=ActivityType.EMAIL_CLICKED, occurred_at=timezone.now()
    )
    assert refresh_pending_engagement_scores() == 2
    assert not PendingScoreRefresh.objects.exists()
    assert Profile.objects.get(pk=profile.pk).engagement_score > 14
    assert refresh_pending_engagement_scores() == 0


def test_drain_in_batches() -> None:
    profiles = [_profile() for _ in range(5)]
    for profile in profiles:
        engagement_refresh_request(profile_id=profile.pk)
    assert engagement_pending_drain(batch_size=2, max_batches=2) == 4
    assert PendingScoreRefresh.objects.count() == 1
    assert engagement_pending_drain(batch_size=2) == 1


def test_schedule_at_most_once_per_window(broker_redis, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(refresh_pending_engagement_scores, "apply_async", lambda **kw: calls.append(kw))
    monkeypatch.setattr(engagement, "_scheduled_until", 0.0)
    engagement.engagement_refresh_schedule()
    engagement.engagement_refresh_schedule()
    assert len(calls) == 1
    # Another process (no memo) finds the Redis key and does not schedule either.
    monkeypatch.setattr(engagement, "_scheduled_until", 0.0)
    engagement.engagement_refresh_schedule()
    assert len(calls) == 1
    ttl = broker_redis.pttl(engagement.SCHEDULE_KEY)
    assert 0 < ttl <= 500
    # The drain clears the key: events after it schedule the next one.
    engagement_pending_drain()
    assert not broker_redis.exists(engagement.SCHEDULE_KEY)
    monkeypatch.setattr(engagement, "_scheduled_until", 0.0)
    engagement.engagement_refresh_schedule()
    assert len(calls) == 2
    assert all(call == {"countdown": 0.5, "queue": "low"} for call in calls)


def test_broken_redis_never_fails_the_event(monkeypatch, caplog, django_capture_on_commit_callbacks) -> None:
    class Broken:
        def set(self, *args, **kwargs):
            raise ConnectionError("down")

    monkeypatch.setattr(engagement, "_redis", lambda: Broken())
    monkeypatch.setattr(engagement, "_scheduled_until", 0.0)
    profile = _profile()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        engagement_refresh_request(profile_id=profile.pk)  # as an engagement event does
    assert len(callbacks) == 1  # the schedule ran after commit and did not raise
    # The request stays for the beat schedule's drain, and the next event tries to schedule again.
    assert list(PendingScoreRefresh.objects.values_list("profile_id", flat=True)) == [profile.pk]
    assert engagement._scheduled_until == 0.0
    assert "engagement_refresh_schedule_failed error=ConnectionError" in caplog.text


def test_task_is_routed_to_low_and_beat_names_it() -> None:
    from django.conf import settings

    assert refresh_pending_engagement_scores.name == "crm.refresh_pending_engagement_scores"
    assert refresh_pending_engagement_scores.queue == "low"
    beat = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "crm.refresh_pending_engagement_scores" in beat


def test_score_change_recomputes_score_segments() -> None:
    profile = _profile()
    segment = Segment.objects.create(tenant_id=profile.tenant_id, name="engaged", min_engagement_score=10)
    _activity(profile, ActivityType.EMAIL_CLICKED, 0)
    engagement_score_refresh(profile=profile, now=NOW)
    assert SegmentMembership.objects.filter(segment=segment, profile=profile).exists()
    engagement_score_refresh(profile=profile, now=NOW + timedelta(days=60))  # 3.75 points left
    assert not SegmentMembership.objects.filter(segment=segment).exists()


@pytest.mark.parametrize("count", [3, 30])
def test_a_batch_is_scored_in_three_statements_and_its_changed_scores_move_segments(
    count: int, django_assert_num_queries
) -> None:
    """Profile locks, scores, then one statement storing them with the changed profiles' memberships."""
    segment = Segment.objects.create(tenant=tenant_get_or_create("t1"), name="engaged", min_engagement_score=10)
    profiles = [_profile() for _ in range(count)]
    clickers = profiles[::3]  # 15 points: members; the others score 0, as they already did: unchanged
    for profile in clickers:
        _activity(profile, ActivityType.EMAIL_CLICKED, 0)
    engagement_scores_refresh(profile_ids=[p.pk for p in profiles], now=NOW)  # first scoring

    stale_member = profiles[1]  # no activity: a membership its score does not justify, left as it is
    SegmentMembership.objects.create(tenant_id=stale_member.tenant_id, segment=segment, profile=stale_member)
    with django_assert_num_queries(3):
        scores = engagement_scores_refresh(profile_ids=[p.pk for p in profiles], now=NOW + timedelta(days=60))

    assert scores == {p.pk: (3.75 if p in clickers else 0.0) for p in profiles}
    assert set(Profile.objects.filter(engagement_score=3.75).values_list("pk", flat=True)) == {p.pk for p in clickers}
    assert set(SegmentMembership.objects.values_list("profile_id", flat=True)) == {stale_member.pk}
