"""`/healthz` for load balancers and orchestrators: the database and both Redis URLs answer.

No authentication, and the body is only `ok` or `not ok`: a probe needs a status code, and an
unauthenticated page must not describe the infrastructure. The reason goes to the log instead.
"""

import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from redis import RedisError

from messaging_events.connections import describe_error, mask_url, ping

logger = logging.getLogger(__name__)


def _failures() -> list[str]:
    failures = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        failures.append(f"database: {describe_error(exc)}")
    for url in dict.fromkeys((settings.CELERY_BROKER_URL, settings.BULLMQ_REDIS_URL)):
        try:
            ping(url)
        except (OSError, RedisError) as exc:
            failures.append(f"redis {mask_url(url)}: {describe_error(exc)}")
    return failures


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    failures = _failures()
    if failures:
        logger.warning("healthz_failed", extra={"failures": failures})
        return HttpResponse("not ok", status=503, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")
