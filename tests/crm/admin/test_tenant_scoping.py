"""Tenant isolation in the admin, through HTTP: a staff user of tenant A never sees tenant B's rows."""

import json
from urllib.parse import quote_plus

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from crm.admin_scoping import tenant_path_for
from crm.models import (
    Activity,
    AttributionEvent,
    BackfillCheckpoint,
    CampaignInteraction,
    ConsentChange,
    ContactLink,
    HardBounce,
    MarketingConsent,
    PendingScoreRefresh,
    Profile,
    Segment,
    SegmentMembership,
    Tenant,
)
from messaging_events.models import InboundEvent
from tests.crm.admin.conftest import World, assert_no_b_data
from tests.crm.admin.factories import make_inbound_event, make_staff, make_tenant

# Every registered model, with a string only tenant A's row shows on its list page.
MODELS = [
    (Tenant, "Acme Ltd"),
    (Profile, "alice@acme.example"),
    (ContactLink, "contact-aaa-1"),
    (Activity, "Alice Anders"),
    (MarketingConsent, "Alice Anders"),
    (ConsentChange, "Alice Anders"),
    (CampaignInteraction, "msg-contact-aaa-1"),
    (AttributionEvent, "camp-contact-aaa-1"),
    (HardBounce, "bounce-contact-aaa-1"),
    (PendingScoreRefresh, "Alice Anders"),
    (Segment, "Openers of Acme Ltd"),
    (SegmentMembership, "Alice Anders"),
    (InboundEvent, "contact-aaa-1"),
]
MODEL_IDS = [m._meta.model_name for m, _ in MODELS]


def url(model: type, view: str, *args: object) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def without_echo(html: str, term: str) -> str:
    """The page repeats the search term (search box, links); leave it out of the leak check."""
    for form in (escape(term), quote_plus(term), term):
        html = html.replace(form, "")
    return html


def row_of(model: type, tenant: Tenant):
    path = tenant_path_for(model)
    return tenant if path == "" else model.objects.get(**{path: tenant})


def test_every_model_of_both_apps_is_registered() -> None:
    from django.apps import apps
    from django.contrib import admin

    for app_label in ("crm", "messaging_events"):
        for model in apps.get_app_config(app_label).get_models():
            assert admin.site.is_registered(model), model


@pytest.mark.django_db
@pytest.mark.parametrize(("model", "a_marker"), MODELS, ids=MODEL_IDS)
def test_changelist_lists_only_own_tenant(client_a: Client, model: type, a_marker: str) -> None:
    response = client_a.get(url(model, "changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert a_marker in html
    assert_no_b_data(html)


@pytest.mark.django_db
@pytest.mark.parametrize(("model", "a_marker"), MODELS, ids=MODEL_IDS)
def test_superuser_sees_every_tenant(client_root: Client, model: type, a_marker: str) -> None:
    response = client_root.get(url(model, "changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert a_marker in html
    assert any(marker in html for marker in ("Bobbington", "contact-bbb", "Beta Corp"))


@pytest.mark.django_db
@pytest.mark.parametrize(("model", "a_marker"), MODELS, ids=MODEL_IDS)
def test_other_tenants_change_page_is_404(world: World, client_a: Client, model: type, a_marker: str) -> None:
    own = row_of(model, world.tenant_a)
    other = row_of(model, world.tenant_b)
    response = client_a.get(url(model, "change", own.pk))
    assert response.status_code == 200
    assert_no_b_data(response.content.decode())

    for view in ("change", "history", "delete"):
        response = client_a.get(url(model, view, other.pk))
        assert response.status_code == 404, (view, response.status_code)
        assert_no_b_data(response.content.decode())


@pytest.mark.django_db
def test_posting_to_another_tenants_profile_changes_nothing(world: World, client_a: Client) -> None:
    response = client_a.post(url(Profile, "change", world.bob.pk), {"first_name": "Hacked"})
    assert response.status_code == 404
    world.bob.refresh_from_db()
    assert world.bob.first_name == "Bob"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "term", ["bob.secret@b-corp.example", "Bobbington", "contact-bbb-9", "+27829990000", "082 999 0000", "Bob"], ids=str
)
def test_search_never_finds_other_tenants_rows(world: World, client_a: Client, term: str) -> None:
    response = client_a.get(url(Profile, "changelist"), {"q": term})
    assert response.status_code == 200
    assert_no_b_data(without_echo(response.content.decode(), term))
    assert "0 results" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("term", ["alice@acme", "Anders", "contact-aaa-1", "+27821110000", "082 111 0000"])
def test_search_finds_own_rows_by_email_phone_name_and_contact_id(client_a: Client, term: str) -> None:
    response = client_a.get(url(Profile, "changelist"), {"q": term})
    assert response.status_code == 200
    assert "alice@acme.example" in response.content.decode()


@pytest.mark.django_db
def test_searching_related_lists_by_contact_id(world: World, client_a: Client) -> None:
    for model in (Activity, ConsentChange, CampaignInteraction):
        html = client_a.get(url(model, "changelist"), {"q": "contact-bbb-9"}).content.decode()
        assert_no_b_data(without_echo(html, "contact-bbb-9"))
        html = client_a.get(url(model, "changelist"), {"q": "contact-aaa-1"}).content.decode()
        assert "Alice Anders" in html or "msg-contact-aaa-1" in html
    html = client_a.get(url(InboundEvent, "changelist"), {"q": "contact-bbb-9"}).content.decode()
    assert_no_b_data(without_echo(html, "contact-bbb-9"))


@pytest.mark.django_db
def test_filtering_on_another_tenant_shows_nothing(world: World, client_a: Client) -> None:
    for model in (Profile, Activity, InboundEvent):
        response = client_a.get(url(model, "changelist"), {"tenant__id__exact": world.tenant_b.pk})
        assert response.status_code == 200
        html = response.content.decode()
        assert_no_b_data(html)
        assert "Alice Anders" not in html and "contact-aaa-1" not in html


@pytest.mark.django_db
def test_tenant_filter_lists_only_own_tenants(world: World) -> None:
    third = make_tenant("cyan-ext", "Cyan Shop")
    staff = make_staff("staff-ac", [world.tenant_a, third])
    client = Client()
    client.force_login(staff)
    for model in (Profile, Activity, ConsentChange, InboundEvent, Segment, SegmentMembership):
        html = client.get(url(model, "changelist")).content.decode()
        assert f"tenant__id__exact={third.pk}" in html, model  # the filter is shown, with both own tenants
        assert f"tenant__id__exact={world.tenant_a.pk}" in html, model
        assert f"tenant__id__exact={world.tenant_b.pk}" not in html, model
        assert "tenant__isnull" not in html, model
        assert_no_b_data(html)


@pytest.mark.django_db
def test_segment_filter_lists_only_own_segments(world: World, client_a: Client) -> None:
    html = client_a.get(url(SegmentMembership, "changelist")).content.decode()
    assert_no_b_data(html)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("source", "field", "own_marker"),
    [
        (ContactLink, "profile", "Alice Anders"),
        (Activity, "profile", "Alice Anders"),
        (Segment, "tenant", "Acme Ltd"),
        (Profile, "tenant", "Acme Ltd"),
    ],
)
def test_autocomplete_only_offers_own_tenants_rows(client_a: Client, source: type, field: str, own_marker: str) -> None:
    params = {"app_label": source._meta.app_label, "model_name": source._meta.model_name, "field_name": field}
    response = client_a.get("/admin/autocomplete/", {**params, "term": ""})
    assert response.status_code == 200
    texts = [r["text"] for r in json.loads(response.content)["results"]]
    assert texts == [own_marker]
    for term in ("Bob", "bob.secret", "Beta", "contact-bbb-9"):
        response = client_a.get("/admin/autocomplete/", {**params, "term": term})
        assert json.loads(response.content)["results"] == []


@pytest.mark.django_db
def test_raw_id_lookup_popup_is_scoped(client_a: Client) -> None:
    response = client_a.get(url(Profile, "changelist"), {"_to_field": "id", "_popup": "1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "alice@acme.example" in html
    assert_no_b_data(html)


@pytest.mark.django_db
def test_foreign_key_choices_are_scoped(world: World) -> None:
    client_a = Client()
    client_a.force_login(make_staff("staff-a-add", [world.tenant_a], perms=("view", "change", "add")))
    response = client_a.get(url(Segment, "add"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Acme Ltd" in html
    assert_no_b_data(html)

    response = client_a.post(url(Segment, "add"), {"tenant": world.tenant_b.pk, "name": "Sneaky"})
    assert response.status_code == 200  # the form is shown again with an error
    assert "Select a valid choice" in response.content.decode()
    assert not Segment.objects.filter(name="Sneaky").exists()

    response = client_a.post(url(Segment, "add"), {"tenant": world.tenant_a.pk, "name": "Loyal"})
    assert response.status_code == 302
    assert Segment.objects.get(name="Loyal").tenant == world.tenant_a


@pytest.mark.django_db
def test_segment_tenant_cannot_be_moved(world: World, client_a: Client) -> None:
    segment = Segment.objects.get(tenant=world.tenant_a)
    response = client_a.post(url(Segment, "change", segment.pk), {"tenant": world.tenant_b.pk, "name": segment.name})
    assert response.status_code == 302
    segment.refresh_from_db()
    assert segment.tenant == world.tenant_a


@pytest.mark.django_db
def test_inbox_rows_without_tenant_are_for_superusers_only(world: World, client_a: Client, client_root: Client) -> None:
    orphan = make_inbound_event(None, status="rejected", contact_id="orphan-contact-77", error="no tenant")
    html = client_a.get(url(InboundEvent, "changelist")).content.decode()
    assert "orphan-contact-77" not in html
    assert client_a.get(url(InboundEvent, "change", orphan.pk)).status_code == 404
    html = client_root.get(url(InboundEvent, "changelist")).content.decode()
    assert "orphan-contact-77" in html
    assert client_root.get(url(InboundEvent, "change", orphan.pk)).status_code == 200


@pytest.mark.django_db
def test_staff_with_no_tenant_sees_nothing(world: World) -> None:
    client = Client()
    client.force_login(make_staff("staff-none", []))
    for model, a_marker in MODELS:
        html = client.get(url(model, "changelist")).content.decode()
        assert a_marker not in html
        assert_no_b_data(html)
    assert client.get(url(Profile, "change", world.alice.pk)).status_code == 404


@pytest.mark.django_db
def test_staff_cannot_edit_tenants_or_their_staff(world: World, client_a: Client) -> None:
    response = client_a.post(url(Tenant, "change", world.tenant_a.pk), {"name": "Renamed", "external_id": "x"})
    assert response.status_code == 403
    world.tenant_a.refresh_from_db()
    assert world.tenant_a.name == "Acme Ltd"
    assert client_a.get(url(Tenant, "add")).status_code == 403


@pytest.mark.django_db
def test_segment_rebuild_action_is_scoped(world: World, client_a: Client, monkeypatch) -> None:
    import sys
    import types

    rebuilt: list[Segment] = []
    fake = types.ModuleType("crm.services.segments")
    fake.segment_rebuild = lambda *, segment: rebuilt.append(segment) or 7
    monkeypatch.setitem(sys.modules, "crm.services.segments", fake)
    mine, theirs = Segment.objects.get(tenant=world.tenant_a), Segment.objects.get(tenant=world.tenant_b)
    response = client_a.post(
        url(Segment, "changelist"),
        {"action": "rebuild_membership", "_selected_action": [mine.pk, theirs.pk]},
        follow=True,
    )
    assert rebuilt == [mine]
    html = response.content.decode()
    assert "Openers of Acme Ltd: 7 member(s)." in html
    assert_no_b_data(html)


@pytest.mark.django_db
def test_backfill_checkpoints_are_for_superusers_only(client_a: Client, client_root: Client) -> None:
    now = timezone.now()
    checkpoint = BackfillCheckpoint.objects.create(
        file_sha256="ab" * 32, file_name="tenant-b-export.jsonl", last_line=5000, started_at=now, updated_at=now
    )
    changelist = reverse("admin:crm_backfillcheckpoint_changelist")
    assert client_a.get(changelist).status_code == 403
    assert client_a.get(reverse("admin:crm_backfillcheckpoint_change", args=[checkpoint.pk])).status_code == 403
    response = client_root.get(changelist)
    assert response.status_code == 200
    assert "tenant-b-export.jsonl" in response.content.decode()
