import json
import logging
import sys

from django.core.management.base import BaseCommand

from messaging_events.services.status import BULLMQ_STATES, BridgeStatus, bridge_status_get

logger = logging.getLogger(__name__)


def _table(status: BridgeStatus) -> str:
    lines = [f"BullMQ {status.bullmq_queue}"]
    lines += [f"  {state:<24}{status.bullmq[state]:>10}" for state in BULLMQ_STATES]
    age = "-" if status.oldest_waiting_age_s is None else f"{status.oldest_waiting_age_s:.1f}s"
    lines.append(f"  {'oldest waiting age':<24}{age:>10}")
    lines.append("Celery queues")
    lines += [f"  {name:<24}{depth:>10}" for name, depth in status.celery_queues.items()]
    oldest = "-" if status.inflight_oldest_age_s is None else f"{status.inflight_oldest_age_s:.1f}s"
    lines.append(f"  {'in flight (unfinished)':<24}{status.inflight_batches:>10} batches, oldest {oldest}")
    lines.append(f"Inbox {'status':<18}{'last hour':>10}{'total':>10}")
    for name, total in status.inbox_total.items():
        lines.append(f"  {name:<24}{status.inbox_last_hour.get(name, 0):>10}{total:>10}")
    parked = status.oldest_parked
    if parked is None:
        lines.append("Oldest parked event: none")
    else:
        lines.append(
            f"Oldest parked event: id={parked.id} type={parked.event_type} tenant={parked.tenant_ref or '-'} "
            f"contact={parked.contact_id or '-'} received={parked.received_at} age={parked.age_s:.0f}s"
        )
    lines.append(f"Open conflicts (same identity, other content): {status.open_conflicts}")
    lines.append(f"Applied with warnings (optional values dropped, informational): {status.applied_with_warnings}")
    if status.problems:
        lines.append("UNHEALTHY:")
        lines += [f"  - {problem}" for problem in status.problems]
    else:
        lines.append("Healthy: no threshold crossed.")
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Queue status on both sides of the bridge: BullMQ counts and lag, Celery queue depths, inbox counts, "
        "oldest parked event. Exits with status 1 when a STATUS_* threshold is crossed (usable as a health check)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="One JSON object instead of the table.")

    def handle(self, *args, **options) -> None:
        status = bridge_status_get()
        if options["json"]:
            self.stdout.write(json.dumps(status.as_dict(), indent=2, sort_keys=True))
        else:
            self.stdout.write(_table(status))
        for problem in status.problems:
            logger.warning("status_threshold_crossed problem=%s", problem)
        if status.problems:
            sys.exit(1)
