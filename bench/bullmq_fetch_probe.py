"""Diagnostic only: how fast BullMQ jobs leave Redis when fetched and completed N at a time.

The bridge drains at about 0.2x the Node worker, and a no-op Python `bullmq` Worker is itself near the
bridge's rate: the library's per-job cost (one asyncio task, one Lua call and round trip to fetch, one to
complete) is the limit (docs/performance.md, "Where the time goes"). This probe measures the way around it
before anyone builds it: the same two stock Lua scripts (`moveToActive`, `moveToFinished`), sent N at a time
in one pipeline, against the stock Worker and the real bridge, on the same jobs in the same run.

Modes, each on a freshly loaded queue of `--jobs` `message.delivered` jobs:
  bridge   `manage.py run_bridge` at its defaults, timed from its first fetch (the bench's bridge_drain);
  stock    a no-op stock `bullmq` Worker, concurrency 64;
  <N>      no-op, N jobs fetched and completed per pipeline;
  b<N>     as <N>, doing the bridge's work inline: `bridged_job`, `parse_job`, one Celery message per 32.

It empties the Redis it is given (every database), so it refuses one that holds any key:

    redis-server --port 56499 --bind 127.0.0.1 --save "" --daemonize yes
    CELERY_BROKER_URL=redis://127.0.0.1:56499/0 BULLMQ_REDIS_URL=redis://127.0.0.1:56499/1 \\
        .venv/bin/python -m bench.bullmq_fetch_probe bridge stock 64 b32 b64

Not a production path: a bridge built this way must also extend the locks of the jobs it holds, run the
stalled-job check, wait on the queue's marker when idle and drain on shutdown, as the stock Worker does.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import django
import uvloop
from bullmq import Job, Queue, Worker
from bullmq.scripts import raw2NextJobData

from messaging_events.bridge.pipelined import FETCH_KEYS, fetch_arguments

QUEUE, PREFIX, KEEP_COMPLETED, LOCK_MS, PUBLISH_BATCH = "crm-events", "bull", {"count": 10_000}, 30_000, 32


def job_specs(n: int) -> list[dict]:
    return [
        {
            "name": "message.delivered",
            "data": {
                "payload": {
                    "messageId": f"probe-m{i}",
                    "contactId": f"probe-c{i % 1000}",
                    "deliveredAt": "2025-12-14T08:00:05Z",
                    "channel": "email",
                }
            },
            "opts": {},
        }
        for i in range(n)
    ]


def bridge_work(jobs: list[Job]) -> None:
    """The bridge's work for these jobs, inline (the real bridge publishes from a thread)."""
    from django.conf import settings

    from messaging_events.bridge.runner import bridged_job
    from messaging_events.contract.jobs import parse_job
    from messaging_events.publishing import publish_batch

    bridged = [bridged_job(job, settings.BRIDGE_MAX_JOB_BYTES) for job in jobs]
    for item in bridged:
        parse_job(item)
    for start in range(0, len(bridged), PUBLISH_BATCH):
        publish_batch(bridged[start : start + PUBLISH_BATCH], queue="normal", task_id=str(uuid.uuid4()))


async def drain_pipelined(queue: Queue, n: int, per_pipeline: int, with_bridge_work: bool) -> float:
    scripts, client = queue.scripts, queue.client
    fetch_keys = scripts.getKeys(FETCH_KEYS)
    done, started = 0, time.perf_counter()
    while done < n:
        tokens = [f"{uuid.uuid4()}:{i}" for i in range(per_pipeline)]
        pipe = client.pipeline(transaction=False)
        for token in tokens:
            args = fetch_arguments(scripts, token, {"lockDuration": LOCK_MS})
            await scripts.commands["moveToActive"](keys=fetch_keys, args=args, client=pipe)
        fetched = []
        for token, raw in zip(tokens, await pipe.execute(), strict=True):
            data, job_id, _limit_until, _delay_until = raw2NextJobData(raw)
            if data:
                fetched.append((Job.fromJSON(queue, data, job_id), token))
        if not fetched:
            await asyncio.sleep(0.005)
            continue
        if with_bridge_work:
            bridge_work([job for job, _ in fetched])
        pipe = client.pipeline(transaction=False)
        for job, token in fetched:
            keys, args = scripts.moveToCompletedArgs(job, None, KEEP_COMPLETED, token, fetchNext=False)
            await scripts.commands["moveToFinished"](keys=keys, args=args, client=pipe)
        errors = [result for result in await pipe.execute() if isinstance(result, int) and result < 0]
        assert not errors, errors
        done += len(fetched)
    return time.perf_counter() - started


async def drain_stock(url: str, n: int) -> float:
    finished, done = asyncio.Event(), 0

    async def no_op(job: Job, token: str) -> None:
        nonlocal done
        done += 1
        if done >= n:
            finished.set()

    options = {"connection": url, "prefix": PREFIX, "concurrency": 64, "autorun": False}
    worker = Worker(QUEUE, no_op, {**options, "removeOnComplete": KEEP_COMPLETED})
    started = time.perf_counter()
    running = asyncio.create_task(worker.run())
    await finished.wait()
    seconds = time.perf_counter() - started
    await worker.close()
    await running
    return seconds


async def drain_bridge(queue: Queue, n: int) -> float:
    bridge = subprocess.Popen(
        [sys.executable, "manage.py", "run_bridge"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while (await queue.getJobCounts("active", "completed")) == {"active": 0, "completed": 0}:
            await asyncio.sleep(0.005)
        started = time.perf_counter()  # from its first fetch, not its start-up
        while (await queue.getJobCounts("completed"))["completed"] < n:
            await asyncio.sleep(0.02)
        return time.perf_counter() - started
    finally:
        bridge.terminate()
        bridge.wait(30)


async def run(modes: list[str], n: int) -> None:
    url = os.environ["BULLMQ_REDIS_URL"]
    queue = Queue(QUEUE, {"connection": url, "prefix": PREFIX})
    try:
        if await queue.client.info("keyspace"):  # one entry per database that holds keys
            raise SystemExit(f"{url} holds keys: the probe empties its Redis, so give it an empty one")
        for mode in modes:
            await queue.client.flushall()
            specs = job_specs(n)
            for start in range(0, n, 1000):
                await queue.addBulk(specs[start : start + 1000])
            if mode == "bridge":
                seconds = await drain_bridge(queue, n)
            elif mode == "stock":
                seconds = await drain_stock(url, n)
            else:
                seconds = await drain_pipelined(queue, n, int(mode.lstrip("b")), mode.startswith("b"))
            counts = await queue.getJobCounts("waiting", "active", "completed")
            print(
                json.dumps(
                    {"mode": mode, "jobs": n, "seconds": round(seconds, 2), "jobs_per_s": round(n / seconds), **counts}
                )
            )
        await queue.client.flushall()
    finally:
        await queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modes", nargs="+", help="bridge, stock, <N> or b<N>")
    parser.add_argument("--jobs", type=int, default=5000)
    options = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    django.setup()
    uvloop.install()
    asyncio.run(run(options.modes, options.jobs))


if __name__ == "__main__":
    main()
