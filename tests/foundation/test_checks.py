"""The system check that keeps a retry's countdown below the broker's visibility timeout."""

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from messaging_events.checks import retry_backoff_below_visibility_timeout


def _transport(timeout: int) -> dict:
    return {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "visibility_timeout": timeout}


def test_the_default_settings_pass() -> None:
    assert retry_backoff_below_visibility_timeout() == []


@pytest.mark.parametrize("backoff_max", [5, 60])
def test_a_backoff_cap_at_or_above_the_visibility_timeout_is_an_error(backoff_max: int) -> None:
    with override_settings(CELERY_BROKER_TRANSPORT_OPTIONS=_transport(5), EVENT_TASK_RETRY_BACKOFF_MAX_S=backoff_max):
        errors = retry_backoff_below_visibility_timeout()
        assert [error.id for error in errors] == ["messaging_events.E001"]
        with pytest.raises(SystemCheckError, match="EVENT_TASK_RETRY_BACKOFF_MAX_S"):
            call_command("check")


def test_a_backoff_cap_below_the_visibility_timeout_passes() -> None:
    with override_settings(CELERY_BROKER_TRANSPORT_OPTIONS=_transport(5), EVENT_TASK_RETRY_BACKOFF_MAX_S=4):
        assert retry_backoff_below_visibility_timeout() == []
