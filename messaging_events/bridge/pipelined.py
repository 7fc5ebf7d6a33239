"""Sends the bridge's BullMQ script calls in pipelines instead of one round trip each.

The stock Worker fetches each job with its own `moveToActive` call and completes it with its own
`moveToFinished` call. Its run loop starts every free slot's fetch in one turn of the event loop, and the
bridge's processors return a whole Celery batch at a time, so those calls come in groups: here every call
asked for in one turn goes out in one pipeline (docs/performance.md, "Stop 25"). They are the same scripts
with the same arguments, so BullMQ's semantics (locks, `removeOnComplete`, the events stream) are
unchanged, and each caller still gets its own result or its own error.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgpack  # type: ignore[import-untyped]  # pinned in requirements.txt
from bullmq.scripts import Scripts, raw2NextJobData

# Scripts.moveToActive's keys, in its order (bullmq 3.4.4): the call is built here so that it can be queued.
FETCH_KEYS = (
    "wait",
    "active",
    "prioritized",
    "events",
    "stalled",
    "limiter",
    "delayed",
    "paused",
    "meta",
    "pc",
    "marker",
)


def fetch_arguments(scripts: Scripts, token: str, opts: dict) -> list:
    """`moveToActive`'s arguments for one fetch, as `Scripts.moveToActive` builds them."""
    packed = msgpack.packb(
        {"token": token, "lockDuration": opts.get("lockDuration", 0), "limiter": opts.get("limiter")},
        use_bin_type=True,
    )
    return [scripts.keys[""], round(time.time() * 1000), packed]


@dataclass
class _Call:
    script: str
    keys: list
    args: list
    done: asyncio.Future


class PipelinedScripts:
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._fetch_keys = scripts.getKeys(FETCH_KEYS)
        self._pending: list[_Call] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task] = set()

    async def move_to_active(self, token: str, opts: dict) -> list[Any]:
        """`RedisBackend.moveToActive`'s contract."""
        args = fetch_arguments(self._scripts, token, opts)
        return raw2NextJobData(await self._queue("moveToActive", self._fetch_keys, args))

    async def move_to_completed(
        self, job: Any, return_value: Any, remove_on_complete: Any, token: str, fetch_next: bool = True
    ) -> dict:
        """`RedisBackend.moveToCompleted`'s contract, never fetching the next job (the Worker asks it not to)."""
        keys, args = self._scripts.moveToCompletedArgs(job, return_value, remove_on_complete, token, False)
        result = await self._queue("moveToFinished", keys, args)
        if isinstance(result, int) and result < 0:
            raise self._scripts.finishedErrors(
                {"code": result, "jobId": str(job.id), "command": "moveToFinished", "state": "active"}
            )
        return {"result": raw2NextJobData(result) if result is not None else None, "finishedOn": args[1]}

    def _queue(self, script: str, keys: list, args: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future())
        self._pending.append(call)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return call.done

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._flush(batch), name="bullmq-pipeline")
        self._flushes.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_Call]) -> None:
        try:
            pipe = self._scripts.redisClient.pipeline(transaction=False)
            for call in batch:
                await self._scripts.commands[call.script](keys=call.keys, args=call.args, client=pipe)
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: each caller sees it, as its own call would have
            for call in batch:
                if not call.done.done():
                    call.done.set_exception(exc)
            return
        for call, result in zip(batch, results, strict=True):
            if not call.done.done():
                if isinstance(result, Exception):
                    call.done.set_exception(result)
                else:
                    call.done.set_result(result)
