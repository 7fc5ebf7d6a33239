"""Re-apply inbox events through the normal task path (Celery, on their priority's queue)."""

import logging
from collections import Counter
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Q
from tqdm import tqdm

from crm.management.arguments import require_positive
from messaging_events.models import InboundEvent, InboundEventStatus
from messaging_events.services.replay import replay_events

logger = logging.getLogger(__name__)

SELECTABLE = ("failed", "parked", "rejected")
DEFAULT_STATUSES = ("failed", "parked")


def _parse_since(value: str | None) -> datetime | None:
    # Parsed in handle(), not by argparse: a CommandError there is one line, in argparse a traceback.
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--since {value!r} is not an ISO 8601 date or timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def select_rows(
    *,
    statuses: list[str] | None = None,
    event_type: str | None = None,
    tenant: str | None = None,
    since: datetime | None = None,
    ids: list[int] | None = None,
):
    """Inbox rows to replay. Without `ids` only failed/parked/rejected rows are ever selected;
    named `ids` are taken whatever their status (an applied or ignored one then changes nothing)."""
    rows = InboundEvent.objects.all()
    if ids:
        rows = rows.filter(pk__in=ids)
        if statuses:
            rows = rows.filter(status__in=statuses)
    else:
        rows = rows.filter(status__in=statuses or DEFAULT_STATUSES)
    if event_type:
        rows = rows.filter(event_type=event_type)
    if tenant:
        rows = rows.filter(Q(tenant_ref=tenant) | Q(tenant__external_id=tenant))
    if since:
        rows = rows.filter(received_at__gte=since)
    return rows.order_by("occurred_at", "id")


class Command(BaseCommand):
    help = (
        "Replay inbox events through Celery (apply_event_batch with replay=True). Default: failed and parked "
        "events. Applied and ignored events are only taken when named with --id, and then change nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--status", action="append", choices=SELECTABLE, help="Repeatable. Default: failed and parked."
        )
        parser.add_argument("--type", dest="event_type", help="Event type, e.g. message.bounced.")
        parser.add_argument("--tenant", help="Tenant id as the producer states it (tenantId).")
        parser.add_argument("--since", help="Received at or after this ISO 8601 time (UTC if naive).")
        parser.add_argument("--id", dest="ids", type=int, nargs="+", help="Inbox row ids.")
        parser.add_argument("--batch-size", type=int, help="Events per Celery message (default BRIDGE_BATCH_SIZE).")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be replayed; publish nothing.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options) -> None:
        require_positive("--batch-size", options["batch_size"])
        rows = select_rows(
            statuses=options["status"],
            event_type=options["event_type"],
            tenant=options["tenant"],
            since=_parse_since(options["since"]),
            ids=options["ids"],
        )
        by_status = Counter({r["status"]: r["n"] for r in rows.order_by().values("status").annotate(n=Count("id"))})
        total = sum(by_status.values())
        summary = ", ".join(f"{status}={n}" for status, n in sorted(by_status.items())) or "none"
        if options["ids"]:
            missing = set(options["ids"]) - set(rows.values_list("pk", flat=True))
            if missing:
                self.stdout.write(f"ids not found (or filtered out): {' '.join(map(str, sorted(missing)))}")
            final = sum(by_status.get(s, 0) for s in (InboundEventStatus.APPLIED, InboundEventStatus.IGNORED))
            if final:
                self.stdout.write(f"{final} named event(s) are applied or ignored: replaying them changes nothing.")
        if options["dry_run"]:
            self.stdout.write(f"dry run: would replay {total} event(s) ({summary}); nothing published.")
            return
        bar = tqdm(
            rows.iterator(chunk_size=500), total=total, unit="event", desc="replay", disable=options["no_progress"]
        )
        published = replay_events(bar, batch_size=options["batch_size"])
        bar.close()
        logger.info("replay_published events=%d statuses=%s", published, summary.replace(" ", ""))
        self.stdout.write(
            f"replayed {published} event(s) ({summary}) through Celery; "
            "watch the outcome with `manage.py bridge_status` or the admin."
        )
