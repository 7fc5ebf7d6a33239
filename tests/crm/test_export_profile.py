"""`python manage.py export_profile`: the subject access export, as JSON on stdout."""

import json
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from crm.management.commands.export_profile import Command
from crm.models import ActivityType, ConsentChange, ConsentSource, ContactLink, MarketingConsent
from tests.crm.admin.factories import BASE_TIME, make_person, make_tenant

TOP_LEVEL_KEYS = {
    "tenant",
    "profile",
    "messaging_contact_ids",
    "consent",
    "consent_history",
    "activities",
    "campaign_interactions",
    "attribution_events",
    "segments",
}
PROFILE_KEYS = {
    "email",
    "phone",
    "first_name",
    "last_name",
    "email_verified",
    "phone_verified",
    "engagement_score",
    "last_message_at",
    "last_activity_at",
    "last_email_open_at",
}


def export(tenant: str, contact_id: str) -> dict:
    out = StringIO()
    call_command("export_profile", "--tenant", tenant, "--contact-id", contact_id, stdout=out)
    return json.loads(out.getvalue())


def is_iso(value: str) -> bool:
    return datetime.fromisoformat(value).tzinfo is not None


@pytest.fixture
def person(db):
    tenant = make_tenant("acme-ext", "Acme Ltd")
    profile = make_person(
        tenant, first="Alice", last="Anders", email="alice@acme.example", phone="+27821110000", contact_id="c-1"
    )
    ContactLink.objects.create(tenant=tenant, profile=profile, messaging_contact_id="c-0-merged-stub")
    # A later opt-out, and an older statement that arrived late (superseded).
    ConsentChange.objects.create(
        tenant=tenant,
        profile=profile,
        channel="email",
        opted_in=False,
        occurred_at=BASE_TIME + timedelta(days=2),
        source=ConsentSource.ADMIN,
        tiebreak="admin:1",
        lawful_basis="phoned support",
        address="alice@acme.example",
    )
    ConsentChange.objects.create(
        tenant=tenant,
        profile=profile,
        channel="sms",
        opted_in=True,
        occurred_at=BASE_TIME - timedelta(days=5),
        source=ConsentSource.MESSAGING_EVENT,
        tiebreak="messaging_event:old",
        superseded=True,
        address="+27829999999",  # a number the profile does not hold: recorded, never counted
        address_stated=False,
        contact_id="c-0-merged-stub",
    )
    MarketingConsent.objects.filter(profile=profile, channel="email").update(
        opted_in=False, changed_at=BASE_TIME + timedelta(days=2), source=ConsentSource.ADMIN
    )
    profile.activities.create(
        tenant=tenant, type=ActivityType.MESSAGE_SENT, occurred_at=BASE_TIME - timedelta(hours=3), data={"a": 1}
    )
    other = make_tenant("beta-ext", "Beta Corp")
    make_person(other, first="Bob", last="B", email="bob@b.example", phone="+27829990000", contact_id="c-b")
    return profile


def test_export_has_exactly_the_documented_keys(person) -> None:
    data = export("acme-ext", "c-1")
    assert set(data) == TOP_LEVEL_KEYS
    assert data["tenant"] == "acme-ext"
    assert set(data["profile"]) >= PROFILE_KEYS
    assert data["profile"]["email"] == "alice@acme.example"
    assert data["profile"]["phone"] == "+27821110000"
    assert data["profile"]["first_name"] == "Alice"
    assert data["profile"]["email_verified"] is True
    assert data["profile"]["phone_verified"] is None
    assert data["profile"]["engagement_score"] == 42.5
    assert data["profile"]["last_message_at"] is None
    assert is_iso(data["profile"]["last_activity_at"])
    assert data["messaging_contact_ids"] == ["c-0-merged-stub", "c-1"]
    assert data["segments"] == ["Openers of Acme Ltd"]


def test_consent_lists_all_four_channels(person) -> None:
    consent = export("acme-ext", "c-1")["consent"]
    assert set(consent) == {"email", "sms", "push", "whatsapp"}
    assert consent["email"]["opted_in"] is False
    assert consent["email"]["source"] == "admin"
    assert datetime.fromisoformat(consent["email"]["changed_at"]) == BASE_TIME + timedelta(days=2)
    assert consent["email"]["address"] == "alice@acme.example"
    for channel, address in (("sms", "+27821110000"), ("push", None), ("whatsapp", "+27821110000")):
        assert consent[channel] == {"address": address, "opted_in": None, "changed_at": None, "source": None}


def test_consent_history_is_the_ledger_oldest_first(person) -> None:
    history = export("acme-ext", "c-1")["consent_history"]
    assert [(h["channel"], h["opted_in"], h["superseded"], h["source"]) for h in history] == [
        ("sms", True, True, "messaging_event"),
        ("email", True, False, "messaging_event"),
        ("email", False, False, "admin"),
    ]
    assert [(h["address"], h["address_stated"], h["messaging_contact_id"]) for h in history] == [
        ("+27829999999", False, "c-0-merged-stub"),
        ("alice@acme.example", True, "c-1"),
        ("alice@acme.example", True, None),
    ]
    times = [datetime.fromisoformat(h["occurred_at"]) for h in history]
    assert times == sorted(times)
    assert all({"channel", "opted_in", "occurred_at", "source", "superseded"} <= set(h) for h in history)


def test_activities_interactions_and_attributions(person) -> None:
    data = export("acme-ext", "c-1")
    assert [a["type"] for a in data["activities"]] == ["MESSAGE_SENT", "EMAIL_OPENED"]
    assert all(set(a) == {"type", "occurred_at", "data"} and is_iso(a["occurred_at"]) for a in data["activities"])
    assert data["activities"][1]["data"]["messageId"] == "msg-c-1"

    (interaction,) = data["campaign_interactions"]
    assert {"message_id", "campaign_id", "type", "count", "first_at", "last_at"} <= set(interaction)
    assert (interaction["message_id"], interaction["campaign_id"], interaction["type"], interaction["count"]) == (
        "msg-c-1",
        "camp-c-1",
        "OPENED",
        2,
    )
    assert is_iso(interaction["first_at"]) and is_iso(interaction["last_at"])

    (attribution,) = data["attribution_events"]
    expected = {"campaign_id", "message_id", "link_url", "utm_source", "utm_medium", "utm_campaign", "utm_term"}
    assert expected | {"utm_content"} <= set(attribution)
    assert attribution["utm_source"] == "news"
    assert attribution["link_url"].startswith("https://example.com/")


def test_nothing_of_another_tenant_is_exported(person) -> None:
    text = json.dumps(export("acme-ext", "c-1"))
    assert "bob@b.example" not in text and "c-b" not in text and "Beta" not in text


@pytest.mark.parametrize(
    ("tenant", "contact_id", "message"),
    [
        ("nope-ext", "c-1", "Unknown tenant 'nope-ext'"),
        ("acme-ext", "c-missing", "Unknown contact 'c-missing' in tenant 'acme-ext'"),
        ("acme-ext", "c-b", "Unknown contact 'c-b'"),  # another tenant's contact is unknown here
    ],
)
def test_unknown_tenant_or_contact_is_a_clear_error(person, tenant: str, contact_id: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("export_profile", "--tenant", tenant, "--contact-id", contact_id, stdout=StringIO())


def test_unknown_contact_exits_non_zero_with_message_on_stderr(person, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        Command().run_from_argv(["manage.py", "export_profile", "--tenant", "acme-ext", "--contact-id", "c-missing"])
    assert exit_info.value.code != 0
    captured = capsys.readouterr()
    assert "Unknown contact 'c-missing'" in captured.err
    assert captured.out == ""
