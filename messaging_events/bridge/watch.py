"""Watches the bridge's two Redis connections and says so, loudly, when one is lost or comes back.

bullmq's Worker retries a lost connection silently (redis-py retries each command up to 20 times,
then the Worker waits `runRetryDelay` and tries again, emitting nothing for connection errors), so
without this a bridge whose Redis is gone looks healthy while it moves nothing. Each target is
pinged with a plain client: every failure is logged with the masked URL, the reason and the next
attempt's delay (exponential, capped); the first success after a failure logs the recovery and
how long the outage lasted.
"""

import asyncio
import logging
import time

from redis import RedisError

from messaging_events.bridge.metrics import BRIDGE_REDIS_CONNECTED
from messaging_events.connections import describe_error, mask_url, ping_async

logger = logging.getLogger(__name__)


class ConnectionWatch:
    def __init__(
        self,
        targets: dict[str, str],
        *,
        check_interval_s: float = 5.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
    ) -> None:
        self.targets = targets
        self.check_interval_s = check_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.connected: dict[str, bool] = dict.fromkeys(targets, False)
        self.failures: dict[str, int] = dict.fromkeys(targets, 0)
        self._up = {name: asyncio.Event() for name in targets}
        self._tasks: list[asyncio.Task] = []

    @property
    def all_connected(self) -> bool:
        return all(self.connected.values())

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch(name), name=f"watch-{name}") for name in self.targets]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def wait_connected(self, name: str) -> None:
        await self._up[name].wait()

    async def _watch(self, name: str) -> None:
        url = self.targets[name]
        delay = self.retry_initial_s
        down_since: float | None = None
        ever_connected = False
        while True:
            try:
                await ping_async(url)
            except (OSError, RedisError, TimeoutError) as exc:
                if down_since is None:
                    down_since = time.monotonic()
                self.connected[name] = False
                BRIDGE_REDIS_CONNECTED.labels(name).set(0)
                self._up[name].clear()
                self.failures[name] += 1
                logger.warning(
                    "redis_connection_failed",
                    extra={
                        "redis": name,
                        "url": mask_url(url),
                        "error": describe_error(exc),
                        "retry_in_s": round(delay, 1),
                        "down_s": round(time.monotonic() - down_since, 1),
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if down_since is not None:
                logger.warning(
                    "redis_connection_recovered",
                    extra={"redis": name, "url": mask_url(url), "down_s": round(time.monotonic() - down_since, 1)},
                )
            elif not ever_connected:
                logger.info("redis_connected", extra={"redis": name, "url": mask_url(url)})
            ever_connected = True
            down_since = None
            delay = self.retry_initial_s
            self.connected[name] = True
            BRIDGE_REDIS_CONNECTED.labels(name).set(1)
            self._up[name].set()
            await asyncio.sleep(self.check_interval_s)
