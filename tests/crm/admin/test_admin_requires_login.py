"""The admin refuses unauthenticated (and non-staff) access: every page redirects to the login."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.crm.admin.conftest import World, assert_no_b_data


def admin_urls(world: World) -> list[str]:
    return [
        reverse("admin:index"),
        reverse("admin:crm_profile_changelist"),
        reverse("admin:crm_profile_change", args=[world.alice.pk]),
        reverse("admin:crm_profile_record_consent", args=[world.alice.pk]),
        reverse("admin:crm_activity_changelist"),
        reverse("admin:crm_consentchange_changelist"),
        reverse("admin:messaging_events_inboundevent_changelist"),
        "/admin/autocomplete/?app_label=crm&model_name=contactlink&field_name=profile&term=a",
    ]


@pytest.mark.django_db
def test_anonymous_requests_redirect_to_login(world: World) -> None:
    client = Client()
    for url in admin_urls(world):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
        assert "alice@acme.example" not in response.content.decode()


@pytest.mark.django_db
def test_anonymous_post_changes_nothing(world: World) -> None:
    client = Client()
    response = client.post(reverse("admin:crm_profile_change", args=[world.alice.pk]), {"first_name": "X"})
    assert response.status_code == 302
    world.alice.refresh_from_db()
    assert world.alice.first_name == "Alice"


@pytest.mark.django_db
def test_logged_in_non_staff_users_are_refused(world: World) -> None:
    client = Client()
    client.force_login(get_user_model().objects.create_user(username="customer", password="pw"))
    for url in admin_urls(world):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
        assert_no_b_data(response.content.decode())
