import redis
from django.conf import settings
from django.db import connection


def test_database_is_postgresql(db) -> None:
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        assert int(cursor.fetchone()[0]) >= 150000


def test_broker_is_a_live_redis_configured_for_queues() -> None:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    assert client.ping() is True
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert "redis_version" in client.info("server")


def test_bullmq_redis_is_live() -> None:
    assert redis.Redis.from_url(settings.BULLMQ_REDIS_URL).ping() is True
