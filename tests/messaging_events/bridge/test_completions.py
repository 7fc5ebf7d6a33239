"""Jobs completed in one turn of the event loop go to Redis in one pipeline, and each caller still gets
its own outcome: a job whose lock is gone fails alone."""

import asyncio

import redis
from bullmq import Job, Queue
from django.conf import settings

from messaging_events.bridge.completions import PipelinedCompletions
from tests.processes import bullmq_counts


async def _take(queue: Queue, token: str) -> Job:
    job_data, job_id, _limit, _delay = await queue.scripts.moveToActive(token, {"lockDuration": 30_000})
    return Job.fromJSON(queue, job_data, job_id)


async def _complete_three_one_with_a_stale_lock() -> tuple[list[object], int]:
    queue = Queue(settings.BULLMQ_QUEUE, {"connection": settings.BULLMQ_REDIS_URL, "prefix": settings.BULLMQ_PREFIX})
    try:
        await queue.addBulk([{"name": "contact.deleted", "data": {"payload": {"n": n}}} for n in range(3)])
        jobs = [await _take(queue, f"token-{n}") for n in range(3)]
        completions = PipelinedCompletions(queue.scripts)
        client = queue.scripts.redisClient
        pipelines = 0
        make_pipeline = client.pipeline

        def counted_pipeline(*args, **kwargs):
            nonlocal pipelines
            pipelines += 1
            return make_pipeline(*args, **kwargs)

        client.pipeline = counted_pipeline
        tokens = ["token-0", "not-the-holder", "token-2"]
        outcomes = await asyncio.gather(
            *(
                completions.move_to_completed(job, None, {"count": 100}, token)
                for job, token in zip(jobs, tokens, strict=True)
            ),
            return_exceptions=True,
        )
        return outcomes, pipelines
    finally:
        await queue.close()


def test_completions_of_one_turn_share_a_pipeline_and_keep_their_own_outcome(bullmq_redis: redis.Redis) -> None:
    outcomes, pipelines = asyncio.run(_complete_three_one_with_a_stale_lock())
    assert pipelines == 1
    assert isinstance(outcomes[1], TypeError) and "Lock mismatch for job" in str(outcomes[1])
    assert [isinstance(outcome, dict) for outcome in outcomes] == [True, False, True]
    counts = bullmq_counts()
    assert counts["completed"] == 2 and counts["active"] == 1
