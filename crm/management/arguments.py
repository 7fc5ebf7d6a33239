"""Checks shared by the operator commands: bad input becomes one `CommandError` line (exit 1), never a traceback."""

import redis
from django.core.management.base import CommandError

from crm.models import Tenant


def require_tenant(external_id: str | None) -> None:
    """A --tenant that names no tenant is a typo, not "nothing to do"."""
    if external_id and not Tenant.objects.filter(external_id=external_id).exists():
        raise CommandError(f"--tenant {external_id!r}: no such tenant (use the tenantId the Messaging service sends)")


def require_positive(option: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise CommandError(f"{option} must be at least 1, got {value}")


def require_redis(url: str, setting: str) -> None:
    """Fail at once when a Redis does not answer (the bullmq client would otherwise retry forever)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (OSError, redis.RedisError) as exc:
        raise CommandError(f"cannot reach the {setting} Redis: {exc}") from None
    finally:
        client.close()
