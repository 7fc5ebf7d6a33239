"""redrive_bullmq moves real failed BullMQ jobs back to waiting; the real bridge and worker then apply them."""

import asyncio
from io import StringIO

import pytest
from bullmq import Worker
from django.conf import settings
from django.core.management import call_command

from messaging_events.models import InboundEvent
from tests.ops.conftest import bullmq_queue, run
from tests.processes import Processes, bridge_command, wait_until, worker_command


def make_failed_jobs(jobs: list[tuple[str, dict]]) -> list[str]:
    """Publish the jobs and fail each once with a real bullmq Worker whose processor raises."""

    async def go() -> list[str]:
        queue = bullmq_queue()
        added = [await queue.add(name, data, {"attempts": 1}) for name, data in jobs]

        async def explode(job, token):
            raise RuntimeError("simulated outage in the consumer")

        worker = Worker(
            settings.BULLMQ_QUEUE,
            explode,
            {"connection": settings.BULLMQ_REDIS_URL, "prefix": settings.BULLMQ_PREFIX, "concurrency": 5},
        )
        try:
            for _ in range(200):
                if (await queue.getJobCounts("failed"))["failed"] >= len(jobs):
                    break
                await asyncio.sleep(0.05)
        finally:
            await worker.close()
            counts = await queue.getJobCounts("failed", "waiting", "active")
            await queue.close()
        assert counts == {"failed": len(jobs), "waiting": 0, "active": 0}, counts
        return [str(job.id) for job in added]

    return run(go())


def _states(ids: list[str]) -> list[str]:
    async def go() -> list[str]:
        queue = bullmq_queue()
        try:
            return [await queue.getJobState(job_id) for job_id in ids]
        finally:
            await queue.close()

    return run(go())


def _redrive(*args: str) -> str:
    out = StringIO()
    call_command("redrive_bullmq", *args, stdout=out)
    return out.getvalue()


def _contact_created(n: int) -> tuple[str, dict]:
    return (
        "contact.created",
        {
            "payload": {
                "eventId": f"redrive-evt-{n}",
                "tenantId": "redrive-tenant",
                "contactId": f"redrive-contact-{n}",
                "firstName": "Redrive",
                "emailOptIn": True,
            }
        },
    )


@pytest.mark.django_db
def test_name_filter_limit_and_dry_run(bullmq_redis) -> None:
    ids = make_failed_jobs([_contact_created(1), ("contact.deleted", {"payload": {"x": 1}}), _contact_created(2)])

    out = _redrive("--name", "contact.created", "--dry-run")
    assert "failed jobs matched: 2; would move to waiting: 2" in out
    assert _states(ids) == ["failed", "failed", "failed"]

    out = _redrive("--name", "contact.created", "--limit", "1")
    assert "moved to waiting: 1" in out
    assert _states(ids) == ["waiting", "failed", "failed"]

    out = _redrive()
    assert "failed jobs matched: 2; moved to waiting: 2" in out
    assert _states(ids) == ["waiting", "waiting", "waiting"]

    assert "failed jobs matched: 0" in _redrive()


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_redriven_job_is_then_applied(bullmq_redis, broker_redis, processes: Processes) -> None:
    name, data = _contact_created(3)
    [job_id] = make_failed_jobs([(name, data)])
    assert not InboundEvent.objects.exists()

    assert "moved to waiting: 1" in _redrive()
    assert _states([job_id]) == ["waiting"]

    worker = processes.start("worker", worker_command(hostname="ops-redrive@%h"))
    bridge = processes.start("bridge", bridge_command())

    def applied() -> InboundEvent | None:
        return InboundEvent.objects.filter(idempotency_key="redrive-evt-3", status="applied").first()

    try:
        row = wait_until(applied, 60, message="the redriven event to be applied")
    except AssertionError:
        rows = list(InboundEvent.objects.values("idempotency_key", "status", "error"))
        raise AssertionError(
            f"{rows}\nbridge:\n{bridge.output()[-3000:]}\nworker:\n{worker.output()[-3000:]}"
        ) from None
    assert row.bullmq_job_id == job_id
    wait_until(lambda: _states([job_id]) == ["completed"], 30, message="the job to complete in BullMQ")
