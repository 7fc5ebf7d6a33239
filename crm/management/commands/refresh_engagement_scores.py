import logging
import time

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from crm.management.arguments import require_positive, require_tenant
from crm.models import Profile
from crm.services.engagement import engagement_score_refresh

logger = logging.getLogger(__name__)


def profile_pk_chunks(*, tenant: str | None, size: int):
    """Profile primary keys in ascending chunks (keyset pagination: no OFFSET, no long-held cursor)."""
    profiles = Profile.objects.order_by("pk")
    if tenant:
        profiles = profiles.filter(tenant__external_id=tenant)
    last = 0
    while True:
        chunk = list(profiles.filter(pk__gt=last).values_list("pk", flat=True)[:size])
        if not chunk:
            return
        yield chunk
        last = chunk[-1]


class Command(BaseCommand):
    help = (
        "Recompute engagement scores for every profile (or one tenant's), in chunks that each commit on their "
        "own, so it can run beside live traffic."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", help="Only this tenant (its external id, the producer's tenantId).")
        parser.add_argument("--chunk-size", type=int, default=500)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options) -> None:
        tenant = options["tenant"]
        require_tenant(tenant)
        require_positive("--chunk-size", options["chunk_size"])
        profiles = Profile.objects.filter(tenant__external_id=tenant) if tenant else Profile.objects.all()
        total = profiles.count()
        now = timezone.now()  # one reference time: every score decays to the same instant
        started = time.monotonic()
        refreshed = 0
        with tqdm(total=total, unit="profile", desc="scores", disable=options["no_progress"]) as bar:
            for chunk in profile_pk_chunks(tenant=tenant, size=options["chunk_size"]):
                with transaction.atomic():
                    for profile in Profile.objects.filter(pk__in=chunk).order_by("pk"):
                        engagement_score_refresh(profile=profile, now=now)
                        refreshed += 1
                bar.update(len(chunk))
                logger.info("engagement_refresh_chunk last_pk=%d refreshed=%d", chunk[-1], refreshed)
        seconds = time.monotonic() - started
        logger.info("engagement_refresh_done refreshed=%d seconds=%.1f tenant=%s", refreshed, seconds, tenant or "*")
        self.stdout.write(f"refreshed {refreshed} engagement score(s) in {seconds:.1f}s")
