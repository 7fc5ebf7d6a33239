"""Shared fixtures. The suite runs against the real PostgreSQL and Redis that `make test` starts."""

import os

import pytest
import redis
from django.conf import settings


def pytest_configure(config: pytest.Config) -> None:
    # Refuse to run against anything but the real servers: no silent SQLite or fake Redis.
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql", "tests need PostgreSQL"
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "tests need a real Redis broker"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")


@pytest.fixture
def broker_redis() -> redis.Redis:
    """The Celery broker's Redis, emptied before the test."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def bullmq_redis() -> redis.Redis:
    """The Redis that holds the BullMQ queues, emptied before the test."""
    client = redis.Redis.from_url(settings.BULLMQ_REDIS_URL)
    client.flushdb()
    yield client
    client.close()
