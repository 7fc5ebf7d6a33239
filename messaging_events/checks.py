"""System checks for settings whose combination, not each value, decides correctness."""

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


@register()
def retry_backoff_below_visibility_timeout(**kwargs: object) -> list[CheckMessage]:
    """A retried batch waits out its countdown in the worker, unacknowledged. A countdown longer than the
    broker's visibility timeout lets kombu restore the message, so the batch runs twice: harmless for the
    effects (the inbox dedupes) but a second delivery on every row, and twice the work during an outage."""
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    backoff_max = settings.EVENT_TASK_RETRY_BACKOFF_MAX_S
    if backoff_max < timeout:
        return []
    return [
        Error(
            f"EVENT_TASK_RETRY_BACKOFF_MAX_S ({backoff_max} s) must be below CELERY_VISIBILITY_TIMEOUT ({timeout} s)",
            hint="Raise CELERY_VISIBILITY_TIMEOUT or lower EVENT_TASK_RETRY_BACKOFF_MAX_S (docs/reliability.md).",
            id="messaging_events.E001",
        )
    ]


@register()
def inflight_grace_above_publish_retry(**kwargs: object) -> list[CheckMessage]:
    """The bridge tracks a batch again at every publish attempt. A grace period shorter than the longest
    wait between attempts lets the reconciler publish a batch the bridge is still retrying: it would run twice."""
    grace, retry_max = settings.INFLIGHT_GRACE_S, settings.BRIDGE_PUBLISH_RETRY_MAX_S
    if grace > retry_max:
        return []
    return [
        Error(
            f"INFLIGHT_GRACE_S ({grace} s) must be above BRIDGE_PUBLISH_RETRY_MAX_S ({retry_max} s)",
            hint="Raise INFLIGHT_GRACE_S (docs/reliability.md, the in-flight register).",
            id="messaging_events.E002",
        )
    ]
