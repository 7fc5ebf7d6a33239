"""The admin's pipeline health page (`/admin/pipeline/`): `bridge_status` for staff who live in the admin.

The figures come from `messaging_events.services.status` (the same service and the same health
verdict as the command); the replay button uses `replay_events`, like the command and the inbox
action. Inbox figures are scoped to the user's tenants; BullMQ and Celery have no tenant and are
shown as they are. The chart is SVG drawn here: production admins often have no internet.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.contrib import messages
from django.contrib.admin import site
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from crm.admin_scoping import scope_queryset
from messaging_events.models import InboundEvent, InboundEventStatus
from messaging_events.services.replay import replay_events
from messaging_events.services.status import (
    HourOutcomes,
    bridge_status_get,
    inbox_applied_with_warnings,
    inbox_hourly_outcomes,
    inbox_parked_summary,
    inbox_top_rejections,
)

FAILED_SHOWN = 20
# Bar colours per outcome, stacked bottom to top in this order.
CHART_SERIES = (
    (InboundEventStatus.APPLIED, "#4a8f4a"),
    (InboundEventStatus.IGNORED, "#9a9a9a"),
    (InboundEventStatus.REJECTED, "#d08a1e"),
    (InboundEventStatus.PARKED, "#5b7fc7"),
    (InboundEventStatus.FAILED, "#c0392b"),
)
CHART_W, CHART_H, BAR_GAP = 720, 160, 2


@dataclass
class Bar:
    x: int
    y: float
    width: int
    height: float
    colour: str
    title: str


def chart_bars(hours: list[HourOutcomes]) -> tuple[list[Bar], int]:
    """Stacked bars, one per hour, scaled to the busiest hour. Returns the bars and that hour's total."""
    peak = max((sum(h.counts.values()) for h in hours), default=0) or 1
    slot = CHART_W // max(len(hours), 1)
    bars = []
    for index, hour in enumerate(hours):
        y = float(CHART_H)
        for status, colour in CHART_SERIES:
            n = hour.counts.get(status, 0)
            if not n:
                continue
            height = CHART_H * n / peak
            y -= height
            label = f"{timezone.localtime(hour.hour):%H:00}: {n} {status}"
            bars.append(Bar(index * slot, round(y, 1), slot - BAR_GAP, round(height, 1), colour, label))
    return bars, peak


def inbox_link(**params: str) -> str:
    return reverse("admin:messaging_events_inboundevent_changelist") + "?" + urlencode(params)


def can_replay(request: HttpRequest) -> bool:
    # The same gate as the inbox's replay action.
    return request.user.has_perm("messaging_events.change_inboundevent")


def pipeline_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("messaging_events.view_inboundevent"):
        raise PermissionDenied
    events = scope_queryset(InboundEvent.objects.all(), request)
    if request.method == "POST":
        return _replay(request, events)
    now = timezone.now()
    status = bridge_status_get(now=now)
    hours = inbox_hourly_outcomes(events, now=now)
    bars, peak = chart_bars(hours)
    parked_count, oldest_parked = inbox_parked_summary(events, now=now)
    failed = events.filter(status=InboundEventStatus.FAILED).select_related("tenant").order_by("-id")
    context = {
        **site.each_context(request),
        "title": "Pipeline health",
        "status": status,
        "chart": {"bars": bars, "peak": peak, "width": CHART_W, "height": CHART_H},
        "legend": [(s.value, colour) for s, colour in CHART_SERIES],
        "first_hour": hours[0].hour if hours else None,
        "totals_24h": {s.value: sum(h.counts.get(s, 0) for h in hours) for s, _ in CHART_SERIES},
        "rejections": [
            (reason, n, inbox_link(status=InboundEventStatus.REJECTED, error=reason))
            for reason, n in inbox_top_rejections(events)
        ],
        "rejected_link": inbox_link(status=InboundEventStatus.REJECTED),
        "parked_count": parked_count,
        "oldest_parked": oldest_parked,
        "parked_link": inbox_link(status=InboundEventStatus.PARKED),
        "warnings_count": inbox_applied_with_warnings(events).count(),
        "warnings_link": inbox_link(status=InboundEventStatus.APPLIED, warnings="yes"),
        "failed_count": failed.count(),
        "failed": failed[:FAILED_SHOWN],
        "failed_link": inbox_link(status=InboundEventStatus.FAILED),
        "can_replay": can_replay(request),
        "oldest_waiting": None
        if status.oldest_waiting_age_s is None
        else now - timedelta(seconds=status.oldest_waiting_age_s),
    }
    return TemplateResponse(request, "admin/pipeline.html", context)


def _replay(request: HttpRequest, events) -> HttpResponse:
    if not can_replay(request):
        raise PermissionDenied
    rows = events.filter(status=InboundEventStatus.FAILED)
    ids = [int(value) for value in request.POST.getlist("id") if value.isdigit()]
    if ids:
        rows = rows.filter(pk__in=ids)
    queued = replay_events(rows.order_by("id").iterator(chunk_size=500))
    messages.success(request, f"Queued {queued} failed event(s) for replay; their outcome appears here shortly.")
    return HttpResponseRedirect(reverse("admin-pipeline"))
