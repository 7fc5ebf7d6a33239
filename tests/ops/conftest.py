"""The operations tests: commands run in-process, or as real subprocesses with the `processes` fixture."""

import asyncio

from bullmq import Queue
from django.conf import settings

from tests.processes import processes  # noqa: F401  (the fixture, for this package's process tests)


def bullmq_queue() -> Queue:
    return Queue(settings.BULLMQ_QUEUE, {"connection": settings.BULLMQ_REDIS_URL, "prefix": settings.BULLMQ_PREFIX})


def run(coro):
    return asyncio.run(coro)
