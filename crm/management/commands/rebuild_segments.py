import logging
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from crm.management.arguments import require_positive, require_tenant
from crm.management.commands.refresh_engagement_scores import profile_pk_chunks
from crm.models import Profile, Segment, SegmentMembership
from crm.services.segments import segment_membership_refresh, segment_rebuild

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Recompute segment memberships for every profile (or one tenant's), in chunks of profiles that each "
        "commit on their own, so it can run beside live traffic. --segment rebuilds one segment in one go."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", help="Only this tenant (its external id, the producer's tenantId).")
        parser.add_argument("--segment", type=int, help="Rebuild only this segment (id), with segment_rebuild.")
        parser.add_argument("--chunk-size", type=int, default=500)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options) -> None:
        tenant = options["tenant"]
        require_tenant(tenant)
        require_positive("--chunk-size", options["chunk_size"])
        started = time.monotonic()
        if options["segment"]:
            segments = Segment.objects.filter(pk=options["segment"])
            if tenant:
                segments = segments.filter(tenant__external_id=tenant)
            segment = segments.first()
            if segment is None:
                raise CommandError(f"no segment {options['segment']}" + (f" in tenant {tenant}" if tenant else ""))
            members = segment_rebuild(segment=segment)
            logger.info("segment_rebuilt segment=%d members=%d", segment.pk, members)
            self.stdout.write(f"segment {segment.pk} ({segment.name}): {members} member(s)")
            return

        profiles = Profile.objects.filter(tenant__external_id=tenant) if tenant else Profile.objects.all()
        memberships = (
            SegmentMembership.objects.filter(tenant__external_id=tenant) if tenant else SegmentMembership.objects
        )
        before = memberships.count()
        total = profiles.count()
        done = 0
        with tqdm(total=total, unit="profile", desc="segments", disable=options["no_progress"]) as bar:
            for chunk in profile_pk_chunks(tenant=tenant, size=options["chunk_size"]):
                with transaction.atomic():
                    for profile in Profile.objects.filter(pk__in=chunk).order_by("pk"):
                        segment_membership_refresh(profile=profile)
                        done += 1
                bar.update(len(chunk))
                logger.info("segments_refresh_chunk last_pk=%d profiles=%d", chunk[-1], done)
        after = memberships.count()
        seconds = time.monotonic() - started
        logger.info("segments_refresh_done profiles=%d memberships=%d->%d seconds=%.1f", done, before, after, seconds)
        self.stdout.write(
            f"refreshed segment memberships of {done} profile(s) in {seconds:.1f}s: {before} -> {after} memberships"
        )
