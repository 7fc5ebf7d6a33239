"""Completes BullMQ jobs in pipelines instead of one round trip each.

The stock Worker completes each job with its own `moveToFinished` call as soon as the processor returns.
The bridge's processors return together, a whole Celery batch at a time, so the jobs of one batch each
sent their own script call (docs/performance.md, "Stop 25"). Here every completion asked for in one turn
of the event loop goes out in one pipeline: the same script with the same arguments, so BullMQ's
semantics (the lock check, `removeOnComplete`, the events stream) are unchanged, and each job's caller
still gets its own result or its own error.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

from bullmq.scripts import Scripts, raw2NextJobData


@dataclass
class _Completion:
    job_id: str
    keys: list
    args: list
    done: asyncio.Future


class PipelinedCompletions:
    def __init__(self, scripts: Scripts) -> None:
        self._scripts = scripts
        self._pending: list[_Completion] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task] = set()

    async def move_to_completed(
        self, job: Any, return_value: Any, remove_on_complete: Any, token: str, fetch_next: bool = True
    ) -> dict:
        """`RedisBackend.moveToCompleted`'s contract: never fetches the next job (the Worker asks it not to)."""
        keys, args = self._scripts.moveToCompletedArgs(job, return_value, remove_on_complete, token, False)
        loop = asyncio.get_running_loop()
        completion = _Completion(str(job.id), keys, args, loop.create_future())
        self._pending.append(completion)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        result = await completion.done
        return {"result": result, "finishedOn": args[1]}

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._flush(batch), name="bullmq-completions")
        self._flushes.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_Completion]) -> None:
        script = self._scripts.commands["moveToFinished"]
        try:
            pipe = self._scripts.redisClient.pipeline(transaction=False)
            for completion in batch:
                await script(keys=completion.keys, args=completion.args, client=pipe)
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every job of the pipeline stays active, as one call would
            for completion in batch:
                if not completion.done.done():
                    completion.done.set_exception(exc)
            return
        for completion, result in zip(batch, results, strict=True):
            if completion.done.done():
                continue
            if isinstance(result, Exception):
                completion.done.set_exception(result)
            elif isinstance(result, int) and result < 0:
                completion.done.set_exception(
                    self._scripts.finishedErrors(
                        {"code": result, "jobId": completion.job_id, "command": "moveToFinished", "state": "active"}
                    )
                )
            else:
                completion.done.set_result(raw2NextJobData(result) if result is not None else None)
