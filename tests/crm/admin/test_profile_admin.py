"""The profile page: everything about a person, read-only event records, staff edits through the services."""

import re
import sys
import types
from datetime import timedelta

import pytest
from django.forms import NullBooleanSelect
from django.test import Client
from django.urls import reverse

from crm.models import Activity, ActivityType, ConsentChange, Profile
from tests.crm.admin.conftest import World, assert_no_b_data
from tests.crm.admin.factories import BASE_TIME, make_staff


def change_url(profile: Profile) -> str:
    return reverse("admin:crm_profile_change", args=[profile.pk])


def consent_url(profile: Profile) -> str:
    return reverse("admin:crm_profile_record_consent", args=[profile.pk])


def change_form_data(response, **overrides: object) -> dict:
    """What a browser posts back from the change page: the form's values and each inline's management form."""
    form = response.context["adminform"].form
    data: dict = {}
    for name, field in form.fields.items():
        value = form.initial.get(name)
        if isinstance(field.widget, NullBooleanSelect):
            value = {True: "true", False: "false", None: "unknown"}[value]
        data[name] = "" if value is None else value
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for key in ("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS", "MAX_NUM_FORMS"):
            data[f"{inline.formset.prefix}-{key}"] = management[key].value()
    data.update(overrides)
    return data


def fake_service(monkeypatch, module: str, function: str, result: object = None) -> list[dict]:
    """Replace a CRM service by a recorder: these tests pin the admin's side of the contract."""
    calls: list[dict] = []
    fake = types.ModuleType(module)
    setattr(fake, function, lambda **kwargs: calls.append(kwargs) or result)
    monkeypatch.setitem(sys.modules, module, fake)
    return calls


# --- the page ---


@pytest.mark.django_db
def test_profile_page_shows_timeline_consent_interactions_attributions_segments(world: World, client_a: Client) -> None:
    response = client_a.get(change_url(world.alice))
    assert response.status_code == 200
    html = response.content.decode()
    for expected in (
        "contact-aaa-1",  # the messaging contactIds
        "Consent state (current, per channel)",
        "Consent ledger",
        "Timeline (latest 50 activities)",
        "EMAIL_OPENED",
        "opened by alice@acme.example",  # activity data
        "msg-contact-aaa-1",  # interaction
        "camp-contact-aaa-1",  # attribution
        "Openers of Acme Ltd",  # segment
        "Score breakdown",
        "30.0",  # the EMAIL_OPENED part of the breakdown
        "no statement",  # channels without consent statements
        "Record consent change",
        "<th>for address</th>",  # the consent panel names the address each channel's consent is for
        "<td>email</td><td>alice@acme.example</td>",
    ):
        assert expected in html, expected
    assert len(re.findall(r'field-address">\s*<p>alice@acme\.example</p>', html)) == 2  # ledger and state inlines
    assert_no_b_data(html)


@pytest.mark.django_db
def test_timeline_shows_the_latest_50_and_links_to_all(world: World, client_a: Client) -> None:
    for i in range(60):
        Activity.objects.create(
            tenant=world.tenant_a,
            profile=world.alice,
            type=ActivityType.MESSAGE_SENT,
            occurred_at=BASE_TIME + timedelta(minutes=i + 1),
            data={"seq": i},
        )
    response = client_a.get(change_url(world.alice))
    html = response.content.decode()
    formset = next(f.formset for f in response.context["inline_admin_formsets"] if f.formset.model is Activity)
    assert len(formset.forms) == 50
    assert [form.instance.data["seq"] for form in formset.forms][:2] == [59, 58]  # newest first
    assert "61 activities" in html
    assert f"/admin/crm/activity/?profile={world.alice.pk}" in html
    listed = client_a.get(reverse("admin:crm_activity_changelist"), {"profile": world.alice.pk}).content.decode()
    assert "61 results" in listed


@pytest.mark.django_db
def test_event_derived_inlines_are_read_only(world: World, client_a: Client) -> None:
    response = client_a.get(change_url(world.alice))
    for inline in response.context["inline_admin_formsets"]:
        assert not inline.has_add_permission and not inline.has_change_permission
        assert not inline.has_delete_permission
    html = response.content.decode()
    assert 'name="activities-0-type"' not in html
    assert 'name="consent_changes-0-opted_in"' not in html


@pytest.mark.django_db
def test_event_derived_records_are_read_only_for_staff(world: World, client_a: Client) -> None:
    activity = world.alice.activities.first()
    url = reverse("admin:crm_activity_change", args=[activity.pk])
    assert client_a.get(url).status_code == 200  # view
    assert client_a.post(url, {"type": "MESSAGE_SENT"}).status_code == 403
    assert client_a.get(reverse("admin:crm_activity_add")).status_code == 403
    assert client_a.get(reverse("admin:crm_profile_add")).status_code == 403


@pytest.mark.django_db
def test_consent_ledger_is_append_only_even_for_superusers(world: World, client_root: Client) -> None:
    change = ConsentChange.objects.get(profile=world.alice)
    url = reverse("admin:crm_consentchange_change", args=[change.pk])
    assert client_root.get(url).status_code == 200
    assert client_root.post(url, {"opted_in": "false"}).status_code == 403
    delete = reverse("admin:crm_consentchange_delete", args=[change.pk])
    assert client_root.post(delete, {"post": "yes"}).status_code == 403
    assert client_root.get(reverse("admin:crm_consentchange_add")).status_code == 403
    changelist = client_root.get(reverse("admin:crm_consentchange_changelist")).content.decode()
    assert "delete_selected" not in changelist
    assert ConsentChange.objects.filter(pk=change.pk, opted_in=True).exists()


# --- staff edits go through profile_update_by_staff ---


@pytest.mark.django_db
def test_profile_save_calls_the_service_with_only_changed_fields(world: World, client_a: Client, monkeypatch) -> None:
    calls = fake_service(monkeypatch, "crm.services.profiles", "profile_update_by_staff")
    page = client_a.get(change_url(world.alice))
    data = change_form_data(page, first_name="Alicia", email="  Alicia@ACME.example ", email_verified="true")
    response = client_a.post(change_url(world.alice), data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    (call,) = calls
    assert call["user"] == world.staff_a
    assert call["profile"].pk == world.alice.pk
    # The email is normalised like the events' emails; email_verified was True already, so it is unchanged.
    assert call["changes"] == {"first_name": "Alicia", "email": "alicia@acme.example"}
    world.alice.refresh_from_db()
    assert world.alice.first_name == "Alice"  # the admin itself wrote nothing: the (fake) service did not


@pytest.mark.django_db
def test_profile_save_without_changes_calls_nothing(world: World, client_a: Client, monkeypatch) -> None:
    calls = fake_service(monkeypatch, "crm.services.profiles", "profile_update_by_staff")
    page = client_a.get(change_url(world.alice))
    assert client_a.post(change_url(world.alice), change_form_data(page)).status_code == 302
    assert calls == []


@pytest.mark.django_db
def test_invalid_email_or_phone_is_a_form_error(world: World, client_a: Client, monkeypatch) -> None:
    calls = fake_service(monkeypatch, "crm.services.profiles", "profile_update_by_staff")
    page = client_a.get(change_url(world.alice))
    response = client_a.post(change_url(world.alice), change_form_data(page, email="not-an-email", phone="12"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "email" in errors and "phone" in errors
    assert calls == []


@pytest.mark.django_db
def test_staff_edit_is_recorded_with_staff_provenance(world: World, client_a: Client) -> None:
    page = client_a.get(change_url(world.alice))
    response = client_a.post(change_url(world.alice), change_form_data(page, first_name="Alicia"))
    assert response.status_code == 302
    world.alice.refresh_from_db()
    assert world.alice.first_name == "Alicia"
    assert world.alice.field_sources["first_name"]["by"] == "staff"


# --- consent recorded by hand ---


@pytest.mark.django_db
def test_record_consent_calls_the_service_with_the_user(world: World, client_a: Client, monkeypatch) -> None:
    calls = fake_service(monkeypatch, "crm.services.consent", "consent_record_by_staff")
    assert client_a.get(consent_url(world.alice)).status_code == 200
    response = client_a.post(
        consent_url(world.alice), {"channel": "sms", "opted_in": "false", "lawful_basis": "phoned support to stop SMS"}
    )
    assert response.status_code == 302
    assert response["Location"] == change_url(world.alice)
    (call,) = calls
    assert call["profile"].pk == world.alice.pk
    assert (call["channel"], call["opted_in"], call["user"], call["lawful_basis"]) == (
        "sms",
        False,
        world.staff_a,
        "phoned support to stop SMS",
    )


@pytest.mark.django_db
def test_record_consent_requires_a_lawful_basis(world: World, client_a: Client, monkeypatch) -> None:
    calls = fake_service(monkeypatch, "crm.services.consent", "consent_record_by_staff")
    response = client_a.post(consent_url(world.alice), {"channel": "sms", "opted_in": "false", "lawful_basis": ""})
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert calls == []


@pytest.mark.django_db
def test_record_consent_is_scoped_and_needs_change_permission(world: World, client_a: Client, monkeypatch) -> None:
    calls = fake_service(monkeypatch, "crm.services.consent", "consent_record_by_staff")
    data = {"channel": "email", "opted_in": "false", "lawful_basis": "x"}
    assert client_a.get(consent_url(world.bob)).status_code == 404
    assert client_a.post(consent_url(world.bob), data).status_code == 404
    viewer = Client()
    viewer.force_login(make_staff("viewer", [world.tenant_a], perms=("view",)))
    assert viewer.post(consent_url(world.alice), data).status_code == 403
    assert calls == []


@pytest.mark.django_db
def test_record_consent_lands_in_the_ledger_with_the_user(world: World, client_a: Client) -> None:
    response = client_a.post(
        consent_url(world.alice), {"channel": "sms", "opted_in": "false", "lawful_basis": "asked by phone"}
    )
    assert response.status_code == 302
    entry = ConsentChange.objects.filter(profile=world.alice, channel="sms").get()
    assert (entry.opted_in, entry.source, entry.actor, entry.lawful_basis, entry.address) == (
        False,
        "admin",
        world.staff_a,
        "asked by phone",
        world.alice.phone,  # about the number the profile holds, which the form names
    )
    assert world.alice.phone in client_a.get(consent_url(world.alice)).content.decode()
    world.alice.refresh_from_db()
    assert world.alice.sms_opt_in is False
    html = client_a.get(change_url(world.alice)).content.decode()
    assert "asked by phone" in html


# --- actions ---


@pytest.mark.django_db
def test_recompute_engagement_score_action(world: World, client_a: Client, monkeypatch) -> None:
    calls = fake_service(monkeypatch, "crm.services.engagement", "engagement_score_refresh", result=1.0)
    response = client_a.post(
        reverse("admin:crm_profile_changelist"),
        {"action": "recompute_engagement_score", "_selected_action": [world.alice.pk, world.bob.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert [call["profile"].pk for call in calls] == [world.alice.pk]  # B's id is out of scope
    assert "Recomputed the engagement score of 1 profile(s)." in response.content.decode()


@pytest.mark.django_db
def test_recompute_engagement_score_action_really_recomputes(world: World, client_a: Client) -> None:
    Profile.objects.filter(pk=world.alice.pk).update(engagement_score=99.0, engagement_scored_at=None)
    client_a.post(
        reverse("admin:crm_profile_changelist"),
        {"action": "recompute_engagement_score", "_selected_action": [world.alice.pk]},
    )
    world.alice.refresh_from_db()
    # Alice has one EMAIL_OPENED (5 points) at BASE_TIME, halved every 30 days until the recompute.
    age_days = (world.alice.engagement_scored_at - BASE_TIME).total_seconds() / 86400
    assert world.alice.engagement_score == pytest.approx(5 * 0.5 ** (age_days / 30), abs=1e-4)
    assert world.alice.engagement_breakdown["types"] == {
        "EMAIL_OPENED": {"count": 1, "weight": 5.0, "points": world.alice.engagement_score}
    }


@pytest.mark.django_db
def test_profile_page_query_count_does_not_grow_with_rows(world: World, client_a: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client_a.get(change_url(world.alice)).status_code == 200
        return len(captured.captured_queries)

    before = queries()
    for i in range(30):
        at = BASE_TIME + timedelta(minutes=i + 1)
        Activity.objects.create(
            tenant=world.tenant_a, profile=world.alice, type=ActivityType.MESSAGE_SENT, occurred_at=at
        )
        ConsentChange.objects.create(
            tenant=world.tenant_a,
            profile=world.alice,
            channel="push",
            opted_in=bool(i % 2),
            occurred_at=at,
            source="admin",
            actor=world.staff_a,
            tiebreak=f"admin:{i}",
        )
    assert queries() == before
