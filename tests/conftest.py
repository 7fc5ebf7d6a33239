"""Shared fixtures. The suite runs against the real PostgreSQL and Redis that `make test` starts."""

import os
from importlib import import_module

import pytest
import redis
from django.apps import apps
from django.conf import settings


def pytest_configure(config: pytest.Config) -> None:
    # Refuse to run against anything but the real servers: no silent SQLite or fake Redis.
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql", "tests need PostgreSQL"
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "tests need a real Redis broker"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker) -> None:
    """A reused test database (`--reuse-db`, as every mutant's run in `make mutation`) was flushed by the
    last session's transactional tests, which empties the role groups a data migration made: the
    admin tests would then fail for that reason alone. Make them again, as that migration does."""
    roles = import_module("crm.migrations.0003_crm_role_groups")
    group = apps.get_model("auth", "Group")
    with django_db_blocker.unblock():
        for name, permissions in ((roles.VIEWER, roles.VIEW), (roles.EDITOR, roles.VIEW + roles.EDIT)):
            role, created = group.objects.get_or_create(name=name)
            if created:
                role.permissions.set(roles._permissions(apps, permissions))


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
