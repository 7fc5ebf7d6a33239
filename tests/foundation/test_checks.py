"""The system checks on setting combinations: a retry's countdown below the broker's visibility timeout,
the in-flight grace period above the bridge's longest publish retry."""

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from messaging_events.checks import inflight_grace_above_publish_retry, retry_backoff_below_visibility_timeout


def _transport(timeout: int) -> dict:
    return {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "visibility_timeout": timeout}


def test_the_default_settings_pass() -> None:
    assert retry_backoff_below_visibility_timeout() == []
    assert inflight_grace_above_publish_retry() == []


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


@pytest.mark.parametrize("grace", [5.0, 10.0])
def test_an_inflight_grace_at_or_below_the_publish_retry_cap_is_an_error(grace: float) -> None:
    with override_settings(INFLIGHT_GRACE_S=grace, BRIDGE_PUBLISH_RETRY_MAX_S=10.0):
        assert [error.id for error in inflight_grace_above_publish_retry()] == ["messaging_events.E002"]
        with pytest.raises(SystemCheckError, match="INFLIGHT_GRACE_S"):
            call_command("check")


def test_an_inflight_grace_above_the_publish_retry_cap_passes() -> None:
    with override_settings(INFLIGHT_GRACE_S=10.5, BRIDGE_PUBLISH_RETRY_MAX_S=10.0):
        assert inflight_grace_above_publish_retry() == []
