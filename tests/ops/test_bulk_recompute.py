"""refresh_engagement_scores and rebuild_segments: bulk, chunked, tenant-filtered, exact results."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from crm.models import Activity, ActivityType, Profile, Segment, SegmentMembership, Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenants() -> dict[str, Tenant]:
    a = Tenant.objects.create(external_id="bulk-a")
    b = Tenant.objects.create(external_id="bulk-b")
    Profile.objects.bulk_create(
        [Profile(tenant=a, first_name=f"A{n}", email_opt_in=(n % 2 == 0)) for n in range(1_100)]
        + [Profile(tenant=b, first_name=f"B{n}", email_opt_in=True) for n in range(40)]
    )
    return {"a": a, "b": b}


def _run(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, "--no-progress", stdout=out)
    return out.getvalue()


def test_refresh_engagement_scores_in_chunks(tenants, caplog) -> None:
    a = tenants["a"]
    opener = Profile.objects.filter(tenant=a).order_by("pk").first()
    Activity.objects.create(
        tenant=a, profile=opener, type=ActivityType.EMAIL_CLICKED, occurred_at=timezone.now() - timedelta(minutes=1)
    )
    caplog.set_level("INFO")
    out = _run("refresh_engagement_scores", "--tenant", "bulk-a", "--chunk-size", "500")
    assert "refreshed 1100 engagement score(s)" in out
    assert len([r for r in caplog.records if r.getMessage().startswith("engagement_refresh_chunk")]) == 3
    assert not Profile.objects.filter(tenant=a, engagement_scored_at__isnull=True).exists()
    assert Profile.objects.filter(tenant=tenants["b"], engagement_scored_at__isnull=True).count() == 40
    opener.refresh_from_db()
    assert 14.9 < opener.engagement_score <= 15.0
    assert Profile.objects.filter(tenant=a, engagement_score__gt=0).count() == 1


def test_rebuild_segments_in_chunks_and_one_segment(tenants) -> None:
    a, b = tenants["a"], tenants["b"]
    emailable = Segment.objects.create(tenant=a, name="Emailable", required_consent_channel="email")
    everyone_b = Segment.objects.create(tenant=b, name="Everyone")

    out = _run("rebuild_segments", "--tenant", "bulk-a", "--chunk-size", "500")
    assert "of 1100 profile(s)" in out and "0 -> 550 memberships" in out
    assert SegmentMembership.objects.filter(segment=emailable).count() == 550
    assert not SegmentMembership.objects.filter(segment=everyone_b).exists()

    # Drift (a bulk update that bypassed the services) is repaired; a second run changes nothing.
    Profile.objects.filter(pk__in=Profile.objects.filter(tenant=a, email_opt_in=False).values("pk")[:10]).update(
        email_opt_in=True
    )
    assert "550 -> 560 memberships" in _run("rebuild_segments", "--tenant", "bulk-a")
    assert "560 -> 560 memberships" in _run("rebuild_segments", "--tenant", "bulk-a")

    assert f"segment {everyone_b.pk} (Everyone): 40 member(s)" in _run(
        "rebuild_segments", "--segment", str(everyone_b.pk)
    )
