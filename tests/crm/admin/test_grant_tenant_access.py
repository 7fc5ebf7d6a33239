"""`grant_tenant_access` over HTTP: what a viewer and an editor can do in the admin, and in which tenant."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from crm.models import ConsentChange, Profile
from tests.crm.admin.conftest import B_MARKERS, World

PASSWORD = "a-long-test-password"


def grant(*args: str) -> None:
    call_command("grant_tenant_access", *args, stdout=open("/dev/null", "w"))  # noqa: SIM115


def logged_in(username: str) -> Client:
    user = get_user_model().objects.get(username=username)
    user.set_password(PASSWORD)
    user.save()
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def change_url(profile: Profile) -> str:
    return reverse("admin:crm_profile_change", args=[profile.pk])


def consent_url(profile: Profile) -> str:
    return reverse("admin:crm_profile_record_consent", args=[profile.pk])


CONSENT_FORM = {"channel": "sms", "opted_in": "false", "lawful_basis": "phoned support to stop SMS"}


def test_viewer_reads_their_tenant_but_cannot_change_it(world: World) -> None:
    grant("vera", "acme-ext", "--role", "viewer", "--create")
    client = logged_in("vera")

    listing = client.get(reverse("admin:crm_profile_changelist"))
    assert listing.status_code == 200
    assert "Anders" in listing.content.decode()
    assert not any(marker in listing.content.decode() for marker in B_MARKERS)
    page = client.get(change_url(world.alice))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    for url in (reverse("admin:messaging_events_inboundevent_changelist"), reverse("admin:crm_segment_changelist")):
        assert client.get(url).status_code == 200

    assert client.post(change_url(world.alice), {"first_name": "Changed"}).status_code == 403
    assert client.post(consent_url(world.alice), CONSENT_FORM).status_code == 403
    world.alice.refresh_from_db()
    assert world.alice.first_name == "Alice"
    assert ConsentChange.objects.filter(profile=world.alice).count() == 1
    assert client.get(change_url(world.bob)).status_code == 404


def test_editor_records_consent_in_their_tenant_only(world: World) -> None:
    grant("eddie", "acme-ext", "--role", "editor", "--create")
    client = logged_in("eddie")

    response = client.post(consent_url(world.alice), CONSENT_FORM)
    assert response.status_code == 302, response.content.decode()[:500]
    recorded = ConsentChange.objects.get(profile=world.alice, channel="sms")
    assert (recorded.opted_in, recorded.actor.username) == (False, "eddie")

    assert client.post(consent_url(world.bob), CONSENT_FORM).status_code == 404
    assert client.get(change_url(world.bob)).status_code == 404
    assert not ConsentChange.objects.filter(profile=world.bob, channel="sms").exists()
    listing = client.get(reverse("admin:crm_profile_changelist")).content.decode()
    assert not any(marker in listing for marker in B_MARKERS)


def test_role_change_and_revoke(world: World) -> None:
    grant("sam", "acme-ext", "--role", "editor", "--create")
    grant("sam", "acme-ext", "--role", "viewer")
    sam = get_user_model().objects.get(username="sam")
    assert list(sam.groups.values_list("name", flat=True)) == ["CRM viewer"]
    client = logged_in("sam")
    assert client.post(consent_url(world.alice), CONSENT_FORM).status_code == 403

    grant("sam", "acme-ext", "--revoke")
    sam.refresh_from_db()
    assert (sam.is_staff, sam.groups.count(), sam.crm_tenants.count()) == (False, 0, 0)
    # No longer admin staff: the admin sends them to the login page.
    assert client.get(reverse("admin:crm_profile_changelist")).status_code == 302


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody", "acme-ext", "--role", "viewer"), "no user 'nobody'; pass --create"),
        (("vera", "no-such-tenant", "--role", "viewer", "--create"), "no tenant with id 'no-such-tenant'"),
        (("vera", "acme-ext"), "--role viewer|editor is required"),
        (("root", "acme-ext", "--role", "viewer"), "is a superuser"),
    ],
)
def test_bad_input_is_one_clear_error(world: World, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("|", r"\|")):
        grant(*args)
    assert not get_user_model().objects.filter(username="vera").exists()
