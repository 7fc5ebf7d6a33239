"""The bridge's fetches and completions asked for in one turn of the event loop go to Redis in one
pipeline each, and every caller still gets its own outcome: its own job, or its own error."""

import asyncio

import redis
from bullmq import Job, Queue
from django.conf import settings

from messaging_events.bridge.pipelined import PipelinedScripts
from tests.processes import bullmq_counts


async def _fetch_four_complete_three() -> tuple[list[list], list[object], int]:
    """Three jobs waiting; four fetches at once, then three completions at once, one with a stale token."""
    queue = Queue(settings.BULLMQ_QUEUE, {"connection": settings.BULLMQ_REDIS_URL, "prefix": settings.BULLMQ_PREFIX})
    try:
        await queue.addBulk([{"name": "contact.deleted", "data": {"payload": {"n": n}}} for n in range(3)])
        pipelined = PipelinedScripts(queue.scripts)
        client = queue.scripts.redisClient
        pipelines = 0
        make_pipeline = client.pipeline

        def counted_pipeline(*args, **kwargs):
            nonlocal pipelines
            pipelines += 1
            return make_pipeline(*args, **kwargs)

        client.pipeline = counted_pipeline
        fetched = await asyncio.gather(
            *(pipelined.move_to_active(f"token-{n}", {"lockDuration": 30_000}) for n in range(4))
        )
        jobs = [Job.fromJSON(queue, data, job_id) for data, job_id, _limit, _delay in fetched if data]
        tokens = ["token-0", "not-the-holder", "token-2"]
        completed = await asyncio.gather(
            *(
                pipelined.move_to_completed(job, None, {"count": 100}, token)
                for job, token in zip(jobs, tokens, strict=True)
            ),
            return_exceptions=True,
        )
        return fetched, completed, pipelines
    finally:
        await queue.close()


def test_one_pipeline_per_turn_and_each_caller_its_own_outcome(bullmq_redis: redis.Redis) -> None:
    fetched, completed, pipelines = asyncio.run(_fetch_four_complete_three())
    assert pipelines == 2
    assert sorted(job_id for _data, job_id, _limit, _delay in fetched[:3]) == ["1", "2", "3"]
    assert fetched[3][0] is None  # the queue was empty for the fourth fetch
    assert isinstance(completed[1], TypeError) and "Lock mismatch for job" in str(completed[1])
    assert [isinstance(outcome, dict) for outcome in completed] == [True, False, True]
    counts = bullmq_counts()
    assert counts["completed"] == 2 and counts["active"] == 1 and counts["waiting"] == 0
