"""Error tracking with Sentry (sentry-sdk), on when SENTRY_DSN is set.

What may leave the machine: the exception's type, its stack (file, function, line; no local
variables), and tags naming the event (`event_type`, `key`, `queue`). Personal data must not:
`data_collection` turns off user info, bodies, SQL parameters, task arguments and local variables, and
`scrub` replaces anything shaped
like an email address or phone number in every string of an event before it is sent (an exception
message can quote the data that broke it).
"""

from typing import Any

import sentry_sdk
from sentry_sdk import types as sentry_types
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from messaging_events.redaction import redact


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    return value


def scrub(event: sentry_types.Event, hint: sentry_types.Hint | None = None) -> sentry_types.Event:
    """before_send / before_breadcrumb: no email or phone number in anything sent."""
    for exception in (event.get("exception") or {}).get("values", []):
        for frame in (exception.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    # Tags are ours (`report`): event type, idempotency key, queue. A key is a hash or an event id, and
    # its digit runs must stay searchable.
    tags = event.pop("tags", None)
    event = _scrub_value(event)
    if tags is not None:
        event["tags"] = tags
    return event


def _scrub_breadcrumb(
    crumb: sentry_types.Breadcrumb, hint: sentry_types.BreadcrumbHint | None = None
) -> sentry_types.Breadcrumb:
    return _scrub_value(crumb)


def init_error_tracking(dsn: str, *, environment: str, release: str | None = None, **options: Any) -> None:
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        # Nothing about people: no user, no request bodies, no SQL parameters, no task arguments, no locals.
        data_collection={
            "user_info": False,
            "http_bodies": [],
            "database_query_data": False,
            "queues": False,
            "stack_frame_variables": False,
        },
        before_send=scrub,
        before_breadcrumb=_scrub_breadcrumb,
        traces_sample_rate=0.0,
        **options,
    )


def report(exc: BaseException, **tags: str | int) -> None:
    """Send `exc` with identifying tags (event type, idempotency key, queue): never the event's data."""
    if not sentry_sdk.get_client().is_active():
        return  # off (no SENTRY_DSN): cost nothing on the bridge's event loop
    with sentry_sdk.new_scope() as scope:
        for name, value in tags.items():
            scope.set_tag(name, str(value)[:200])
        sentry_sdk.capture_exception(exc)
