"""The admin's pipeline health page: the bridge_status figures and verdict, scoped inbox figures, replay."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from messaging_events.models import InboundEvent
from messaging_events.services.status import bridge_status_get, celery_queue_depths
from tests.crm.admin.conftest import World, assert_no_b_data
from tests.crm.admin.factories import make_inbound_event, make_staff

PAGE = reverse("admin-pipeline")


@pytest.fixture
def inbox(world: World, bullmq_redis, broker_redis) -> dict[str, list[InboundEvent]]:
    a, b = world.tenant_a, world.tenant_b
    return {
        "rejected_a": [
            make_inbound_event(a, status="rejected", error="email: not a valid address"),
            make_inbound_event(a, status="rejected", error="email: not a valid address"),
            make_inbound_event(a, status="rejected", error="contactId: field required"),
        ],
        "failed_a": [
            make_inbound_event(a, status="failed", error="database went away", priority="low"),
            make_inbound_event(a, status="failed", error="database went away", priority="low"),
        ],
        "parked_a": [make_inbound_event(a, status="parked", event_type="message.sent")],
        "b": [
            make_inbound_event(b, status="rejected", error="Bobbington rejection"),
            make_inbound_event(b, status="failed", error="beta-ext failure"),
        ],
    }


def test_page_shows_queues_scoped_outcomes_and_the_verdict(world: World, client_a: Client, inbox) -> None:
    response = client_a.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert_no_b_data(html)
    assert "Healthy: no threshold crossed" in html
    for section in ('id="queues"', "BullMQ crm-events", "oldest waiting", "Celery queue", "<svg", "Parked events"):
        assert section in html
    # Top reasons, most frequent first, with counts and links to the filtered inbox list.
    reasons = re.findall(r'<td class="reason"><a href="([^"]+)">([^<]+)</a></td><td>(\d+)</td>', html)
    assert [(text, int(n)) for _, text, n in reasons] == [
        ("email: not a valid address", 2),
        ("contactId: field required", 1),
    ]
    listing = client_a.get(reasons[0][0].replace("&amp;", "&")).content.decode()
    assert listing.count(">email: not a valid address</span>") == 2 and "field required" not in listing
    # The chart: one bar per outcome present this hour (applied is tenant A's seeded event).
    assert len(re.findall(r"<rect ", html)) == 4
    assert ">1 parked</a>" in html
    assert "2 failed event(s)" in html
    assert "Replay all 2 failed event(s)" in html


def test_verdict_is_the_same_as_bridge_status(world: World, client_a: Client, inbox, settings) -> None:
    settings.STATUS_MAX_PARKED_AGE_S = -1
    problems = bridge_status_get().problems
    assert problems and problems[0].startswith("parked event")
    html = client_a.get(PAGE).content.decode()
    assert "Unhealthy" in html
    for problem in problems:
        assert f"<li>{problem}</li>" in html


def test_replay_button_queues_the_tenants_failed_events(world: World, client_a: Client, inbox) -> None:
    response = client_a.post(PAGE)
    assert response.status_code == 302
    # Tenant A's two failed events, on their priority's queue; tenant B's stays where it is.
    assert celery_queue_depths() == {"high": 0, "normal": 0, "low": 1}
    messages = client_a.get(PAGE).content.decode()
    assert "Queued 2 failed event(s) for replay" in messages


def test_replay_needs_the_change_permission(world: World, inbox) -> None:
    viewer = Client()
    viewer.force_login(make_staff("viewer-a", [world.tenant_a], perms=("view",)))
    html = viewer.get(PAGE).content.decode()
    assert "Replay all" not in html
    assert viewer.post(PAGE).status_code == 403
    assert celery_queue_depths() == {"high": 0, "normal": 0, "low": 0}


def test_staff_only(world: World, inbox) -> None:
    assert Client().get(PAGE).status_code == 302
    nobody = Client()
    nobody.force_login(make_staff("no-perms", [world.tenant_a], perms=()))
    assert nobody.get(PAGE).status_code == 403


def test_index_links_to_the_page(client_a: Client) -> None:
    assert f'href="{PAGE}"' in client_a.get(reverse("admin:index")).content.decode()
