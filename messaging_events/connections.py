"""Redis reachability for operators: masked URLs, short error reasons and a ping that fails fast.

bullmq's own connections retry a refused connection 20 times with exponential backoff inside
redis-py (`bullmq.redis_connection.RedisConnection`), and its Worker retries connection errors
silently every `runRetryDelay` (15 s). Neither says anything, so the bridge, `bridge_status` and
`/healthz` ask these plain clients first: no retries, a short timeout, and a reason an operator can read.
"""

import errno
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

PING_TIMEOUT_S = 2.0


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`, safe to log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def describe_error(exc: BaseException) -> str:
    """A short reason: `connection refused`, `timed out`, or the exception's own words."""
    text = str(exc)
    refused = "Connection refused" in text or f"Error {errno.ECONNREFUSED} " in text
    if isinstance(exc, ConnectionRefusedError) or refused:
        return "connection refused"
    if isinstance(exc, TimeoutError | redis.TimeoutError) or "Timeout" in type(exc).__name__:
        return "timed out"
    return f"{type(exc).__name__}: {text}"[:300]


def _client_options() -> dict:
    return {
        "socket_connect_timeout": PING_TIMEOUT_S,
        "socket_timeout": PING_TIMEOUT_S,
        "retry_on_error": [],
        "retry": None,
    }


def ping(url: str) -> None:
    """Raises at once (redis.ConnectionError, redis.TimeoutError, …) when Redis does not answer."""
    client = redis.Redis.from_url(url, **_client_options())
    try:
        client.ping()
    finally:
        client.close()


async def ping_async(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url, **_client_options())
    try:
        await client.ping()
    finally:
        await client.aclose()
