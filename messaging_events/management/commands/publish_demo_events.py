import asyncio
import logging
from collections import Counter

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from crm.management.arguments import require_redis
from messaging_events.demo import DEMO_SEGMENTS, demo_segments_ensure, publish_jobs
from messaging_events.streams.demo import demo_jobs

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Push a realistic, seeded stream of Messaging jobs into the BullMQ queue (every event type, both job "
        "shapes, several tenants, duplicates, reorderings and a few malformed jobs). The same seed publishes the "
        "same events, so running it twice changes nothing in the CRM."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--contacts", type=int, default=60, help="Contacts in the stream (default 60).")
        parser.add_argument("--seed", type=int, default=7, help="Random seed (default 7).")
        parser.add_argument("--tenants", type=int, default=3, help="Tenants (default 3).")

    def handle(self, *args, **options) -> None:
        if options["contacts"] < 1 or not 1 <= options["tenants"] <= 26:
            raise CommandError("--contacts must be at least 1 and --tenants between 1 and 26")
        require_redis(settings.BULLMQ_REDIS_URL, "BullMQ (BULLMQ_REDIS_URL)")
        # Segments first: the workers then add members as they apply the events.
        new_segments = demo_segments_ensure(tenants=options["tenants"])
        jobs = demo_jobs(contacts=options["contacts"], seed=options["seed"], tenants=options["tenants"])
        published = asyncio.run(publish_jobs(jobs))

        by_name = Counter(job["name"] for job in jobs)
        logger.info("demo_published jobs=%d contacts=%d seed=%d", published, options["contacts"], options["seed"])
        self.stdout.write(f"published {published} jobs for {options['contacts']} contacts (seed {options['seed']}):")
        for name, count in sorted(by_name.items()):
            self.stdout.write(f"  {name:<28}{count:>6}")
        names = " and ".join(repr(rules["name"]) for rules in DEMO_SEGMENTS)
        self.stdout.write(f"segments {names} in each demo tenant ({new_segments} new)")
