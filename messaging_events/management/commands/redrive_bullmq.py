"""Move failed BullMQ jobs of the Messaging queue back to waiting, through the bullmq Queue API."""

import asyncio
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management.base import BaseCommand
from tqdm import tqdm

from crm.management.arguments import require_positive, require_redis
from messaging_events.services.status import bullmq_queue

logger = logging.getLogger(__name__)

PAGE = 200


@dataclass
class RedriveResult:
    matched: int = 0
    moved: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)


async def redrive_failed_jobs(
    *, name: str | None = None, limit: int | None = None, dry_run: bool = False, progress: bool = True
) -> RedriveResult:
    """Oldest failed first. A retried job leaves the failed set, so the page offset only counts the skipped ones."""
    result = RedriveResult()
    queue = bullmq_queue()
    try:
        failed_total = (await queue.getJobCounts("failed")).get("failed", 0)
        total = min(failed_total, limit) if limit is not None else failed_total
        bar = tqdm(total=total, unit="job", desc="redrive", disable=not progress, mininterval=0.5)
        offset = 0
        while limit is None or result.matched < limit:
            page = await queue.getJobs(["failed"], offset, offset + PAGE - 1, True)
            if not page:
                break
            stayed = 0
            for job in page:
                if limit is not None and result.matched >= limit:
                    break
                if name is not None and job.name != name:
                    stayed += 1
                    continue
                result.matched += 1
                if dry_run:
                    stayed += 1
                    result.job_ids.append(str(job.id))
                    bar.update(1)
                    continue
                try:
                    await job.retry("failed")
                except Exception as exc:  # locked, or moved by someone else meanwhile
                    stayed += 1
                    result.errors.append((str(job.id), str(exc)[:200]))
                    logger.warning("bullmq_redrive_failed job=%s name=%s error=%s", job.id, job.name, str(exc)[:200])
                else:
                    result.moved += 1
                    result.job_ids.append(str(job.id))
                    logger.info("bullmq_redriven job=%s name=%s attempts=%s", job.id, job.name, job.attemptsMade)
                bar.update(1)
            offset += stayed
        bar.close()
    finally:
        await queue.close()
    return result


class Command(BaseCommand):
    help = "Move failed jobs of the BullMQ crm-events queue back to waiting, so the bridge takes them again."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", help="Only jobs with this job name (the event type, e.g. contact.created).")
        parser.add_argument("--limit", type=int, help="At most this many jobs, oldest failure first.")
        parser.add_argument("--dry-run", action="store_true", help="List what would move; move nothing.")

    def handle(self, *args, **options) -> None:
        require_positive("--limit", options["limit"])
        require_redis(settings.BULLMQ_REDIS_URL, "BullMQ (BULLMQ_REDIS_URL)")
        result = asyncio.run(
            redrive_failed_jobs(name=options["name"], limit=options["limit"], dry_run=options["dry_run"])
        )

        verb = "would move" if options["dry_run"] else "moved"
        self.stdout.write(
            f"failed jobs matched: {result.matched}; {verb} to waiting: "
            f"{result.matched if options['dry_run'] else result.moved}; errors: {len(result.errors)}"
        )
        if options["dry_run"] and result.job_ids:
            self.stdout.write("job ids: " + " ".join(result.job_ids))
        for job_id, error in result.errors:
            self.stdout.write(f"  job {job_id}: {error}")
