"""What the admin lists show: short keys, cut errors with the whole on hover, humanised times,
key-value JSON, segment member counts linking to the members, the demo segments, labels."""

import hashlib
import re

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm.display import key_value_list, when
from crm.models import Segment, SegmentMembership
from messaging_events.demo import DEMO_SEGMENTS, demo_segments_ensure
from messaging_events.models import InboundEvent
from tests.crm.admin.conftest import World
from tests.crm.admin.factories import make_inbound_event


def test_inbound_list_shows_a_short_key_and_the_error_cut_with_hover(world: World, client_a: Client) -> None:
    error = "phoneNumber: value is not a valid phone number " * 4
    row = make_inbound_event(world.tenant_a, status="rejected", error=error, contact_id="c-x")
    key = hashlib.sha256(b"k").hexdigest()
    InboundEvent.objects.filter(pk=row.pk).update(idempotency_key=key)
    html = client_a.get(reverse("admin:messaging_events_inboundevent_changelist")).content.decode()
    assert f'<span title="{key}" style="white-space: nowrap">{key[:12]}…</span>' in html
    assert f'<span title="{error}" style="white-space: nowrap">{error[:40]}…</span>' in html
    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', html)
    assert headers == [
        "short_key",
        "event_type",
        "status_marked",  # the status, with a mark when the contract dropped optional values
        "tenant",
        "contact",
        "received_at_humanised",
        "error_preview",
    ]
    assert "ago</time>" in html


def test_humanised_time_and_key_value_rendering() -> None:
    two_hours_ago = timezone.now() - timezone.timedelta(hours=2, minutes=5)
    assert re.fullmatch(r'<time datetime="[^"]+" title="[^"]+" [^>]+>2\xa0hours ago</time>', when(two_hours_ago))
    html = key_value_list({"messageId": "m-1", "links": ["a", "b"], "ok": True, "<b>": None})
    assert "<dt" in html and "messageId:</dt>" in html and "<li>a</li><li>b</li>" in html
    assert ">yes</dd>" in html and "&lt;b&gt;:</dt>" in html and "<b>" not in html


def test_segment_list_links_the_member_count_to_the_members(world: World, client_a: Client) -> None:
    segment = Segment.objects.get(tenant=world.tenant_a)
    html = client_a.get(reverse("admin:crm_segment_changelist")).content.decode()
    url = reverse("admin:crm_segmentmembership_changelist") + f"?segment={segment.pk}"
    assert f'<a href="{url}">1 member(s)</a>' in html
    page = client_a.get(reverse("admin:crm_segment_change", args=[segment.pk])).content.decode()
    assert f'<a href="{url}">1 member(s)</a>' in page and "Anders" not in page
    members = client_a.get(url).content.decode()
    assert SegmentMembership.objects.filter(segment=segment).count() == 1
    assert "Anders" in members


def test_labels(client_root: Client) -> None:
    html = client_root.get(reverse("admin:index")).content.decode()
    assert "Pending score refreshes" in html and "refreshs" not in html


def test_demo_creates_two_segments_per_tenant_once(db) -> None:
    assert demo_segments_ensure(tenants=2) == 4
    assert demo_segments_ensure(tenants=2) == 0
    names = sorted(Segment.objects.filter(tenant__external_id="demo-tenant-a").values_list("name", flat=True))
    assert names == sorted(rules["name"] for rules in DEMO_SEGMENTS) == ["Email opted in", "Engaged last 30 days"]
    engaged = Segment.objects.get(tenant__external_id="demo-tenant-b", name="Engaged last 30 days")
    assert (engaged.min_engagement_score, engaged.required_consent_channel) == (1.0, "")


def test_profile_page_shows_every_time_humanised(world: World, client_a: Client) -> None:
    html = client_a.get(reverse("admin:crm_profile_change", args=[world.alice.pk])).content.decode()
    # The consent summary, ledger, timeline, interactions, attributions and segments all carry times.
    assert html.count("<time datetime=") >= 8
    assert ", 2025, " not in html  # Django's default "March 1, 2025, noon" rendering
    assert "EMAIL_OPENED:</dt>" in html  # the score breakdown as a key-value list
