"""The inbox in the admin: filters, a read-only detail with the raw data and error, and replay."""

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from messaging_events.models import InboundEvent
from tests.crm.admin.conftest import World, assert_no_b_data
from tests.crm.admin.factories import make_inbound_event, make_staff

CHANGELIST = "admin:messaging_events_inboundevent_changelist"


@pytest.fixture
def inbox(world: World) -> dict[str, InboundEvent]:
    a = world.tenant_a
    return {
        "failed": make_inbound_event(
            a, event_type="email.opened", status="failed", contact_id="c-failed", priority="low"
        ),
        "parked": make_inbound_event(a, event_type="message.sent", status="parked", contact_id="c-parked"),
        "rejected": make_inbound_event(
            a, event_type="message.bounced", status="rejected", contact_id="c-rejected", priority="high"
        ),
        "applied": make_inbound_event(a, event_type="message.sent", status="applied", contact_id="c-applied"),
        "ignored": make_inbound_event(a, event_type="contact.deleted", status="ignored", contact_id="c-ignored"),
    }


@pytest.mark.django_db
def test_filters_on_status_type_and_tenant(world: World, client_a: Client, inbox: dict) -> None:
    html = client_a.get(reverse(CHANGELIST), {"status__exact": "failed"}).content.decode()
    assert "c-failed" in html and "c-parked" not in html and "c-applied" not in html
    html = client_a.get(reverse(CHANGELIST), {"event_type": "message.sent"}).content.decode()
    assert "c-parked" in html and "c-applied" in html and "c-failed" not in html
    html = client_a.get(reverse(CHANGELIST), {"tenant__id__exact": world.tenant_a.pk}).content.decode()
    assert "c-failed" in html
    assert_no_b_data(html)


@pytest.mark.django_db
def test_search_by_contact_id(client_a: Client, inbox: dict) -> None:
    html = client_a.get(reverse(CHANGELIST), {"q": "c-rejected"}).content.decode()
    assert ">c-rejected<" in html and "c-failed" not in html


@pytest.mark.django_db
def test_detail_is_read_only_for_everyone(client_a: Client, client_root: Client, inbox: dict) -> None:
    row = inbox["failed"]
    for client in (client_a, client_root):
        url = reverse("admin:messaging_events_inboundevent_change", args=[row.pk])
        html = client.get(url).content.decode()
        assert "c-failed" in html
        for field in ("status", "raw_data", "error", "tenant", "idempotency_key"):
            assert f'name="{field}"' not in html
        assert client.post(url, {"status": "applied"}).status_code == 403
        delete = reverse("admin:messaging_events_inboundevent_delete", args=[row.pk])
        assert client.post(delete, {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert row.status == "failed"


@pytest.mark.django_db
def test_replay_needs_the_change_permission(world: World, inbox: dict) -> None:
    viewer = Client()
    viewer.force_login(make_staff("viewer", [world.tenant_a], perms=("view",)))
    html = viewer.get(reverse(CHANGELIST)).content.decode()
    assert "replay_selected" not in html


@pytest.mark.django_db
def test_replay_action_queues_only_failed_parked_and_rejected(
    world: World, client_a: Client, inbox: dict, monkeypatch
) -> None:
    replayed: list[InboundEvent] = []

    def fake_replay(rows):
        rows = list(rows)
        replayed.extend(rows)
        return len(rows)

    monkeypatch.setattr("messaging_events.admin.replay_events", fake_replay)
    bob_failed = make_inbound_event(world.tenant_b, status="failed", contact_id="contact-bbb-9")
    selected = [row.pk for row in inbox.values()] + [bob_failed.pk]  # B's id is posted but out of scope
    response = client_a.post(
        reverse(CHANGELIST), {"action": "replay_selected", "_selected_action": selected}, follow=True
    )
    assert response.status_code == 200
    assert {row.pk for row in replayed} == {inbox["failed"].pk, inbox["parked"].pk, inbox["rejected"].pk}
    html = response.content.decode()
    assert "Queued 3 event(s) for replay. Skipped 2 that were not failed, parked or rejected." in html


@pytest.mark.django_db
def test_replay_action_publishes_to_the_broker(client_root: Client, inbox: dict, broker_redis) -> None:
    selected = [inbox["failed"].pk, inbox["rejected"].pk, inbox["applied"].pk]
    response = client_root.post(
        reverse(CHANGELIST), {"action": "replay_selected", "_selected_action": selected}, follow=True
    )
    assert "Queued 2 event(s) for replay. Skipped 1" in response.content.decode()
    # One batch per priority queue: the failed event is `low`, the rejected one `high`.
    assert broker_redis.llen("low") == 1
    assert broker_redis.llen("high") == 1
    assert broker_redis.llen("normal") == 0


def test_inbox_admin_is_registered() -> None:
    assert admin.site.is_registered(InboundEvent)
