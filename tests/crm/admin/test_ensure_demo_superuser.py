from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError


@pytest.mark.django_db
def test_refuses_without_debug_or_force(settings) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="--force"):
        call_command("ensure_demo_superuser", stdout=StringIO())
    assert not get_user_model().objects.filter(username="admin").exists()


@pytest.mark.django_db
def test_creates_once_and_is_idempotent(settings) -> None:
    settings.DEBUG = True
    call_command("ensure_demo_superuser", stdout=StringIO())
    call_command("ensure_demo_superuser", stdout=StringIO())
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff and user.check_password("admin")


@pytest.mark.django_db
def test_force_runs_without_debug(settings) -> None:
    settings.DEBUG = False
    call_command("ensure_demo_superuser", "--force", stdout=StringIO())
    assert get_user_model().objects.filter(username="admin", is_superuser=True).exists()
