"""The inbox in the back office: every event the CRM received, its outcome and error, read-only.

Staff see their tenants' events only; events that resolved to no tenant are for superusers.
Failed, parked and rejected events can be replayed through the normal task path.
Optional values the contract dropped (partial acceptance) show as warnings: a mark beside the
status in the list, a "with warnings" filter, and a table on the event's page.
"""

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from crm.admin.base import TENANT_FILTER, ScopedModelAdmin, WideListMixin
from crm.admin.html import when_column
from crm.admin_scoping import ImmutableAdminMixin
from crm.display import cut, json_block, pre_block
from messaging_events.contract.routing import EventType, Priority
from messaging_events.models import REPLAYABLE_STATUSES, ConflictState, InboundEvent
from messaging_events.services.conflicts import Resolution, conflict_resolve
from messaging_events.services.replay import replay_events

KEY_CHARS = 12
CONTACT_CHARS = 20
ERROR_CHARS = 40


class EventTypeFilter(admin.SimpleListFilter):
    """Choices from the contract, not a DISTINCT over the whole inbox."""

    title = "type"
    parameter_name = "event_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(t.value, t.value) for t in EventType]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(event_type=self.value()) if self.value() else queryset


class PriorityFilter(admin.SimpleListFilter):
    title = "priority"
    parameter_name = "priority"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(p.value, p.value) for p in Priority]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(priority=self.value()) if self.value() else queryset


class WarningsFilter(admin.SimpleListFilter):
    """Events whose contract dropped or reinterpreted an optional value (partial acceptance)."""

    title = "warnings"
    parameter_name = "warnings"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "with warnings"), ("no", "without warnings")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.exclude(warnings=[])
        if self.value() == "no":
            return queryset.filter(warnings=[])
        return queryset


@admin.register(InboundEvent)
class InboundEventAdmin(WideListMixin, ImmutableAdminMixin, ScopedModelAdmin):
    # Fits 1280 px: the error is cut (whole on hover) and the key shortened; attempts are on the row's page.
    list_display = (
        "short_key",
        "event_type",
        "status_marked",
        "tenant",
        "contact",
        when_column("received_at", "received"),
        "error_preview",
    )
    list_display_links = ("short_key",)
    list_filter = ("status", WarningsFilter, "conflict", EventTypeFilter, TENANT_FILTER, PriorityFilter)
    list_select_related = ("tenant",)
    search_fields = (
        "idempotency_key__exact",
        "messaging_contact_id__exact",
        "bullmq_job_id__exact",
        "tenant_ref__exact",
    )
    ordering = ("-id",)
    actions = ("replay_selected", "resolve_conflicts")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "event_type",
                    "status",
                    "error_text",
                    "warnings_table",
                    "tenant",
                    "tenant_ref",
                    "messaging_contact_id",
                )
            },
        ),
        ("Identity", {"fields": ("idempotency_key", "priority", "bullmq_job_id", "job_name")}),
        ("Timing", {"fields": ("occurred_at", "job_timestamp", "received_at", "applied_at", "updated_at")}),
        ("Delivery", {"fields": ("attempts", "deliveries", "job_attempts")}),
        ("Raw data", {"fields": ("raw_data_pretty",)}),
        (
            "Conflict: same identity, other content",
            {"fields": ("conflict", "conflict_job_timestamp", "conflict_data_pretty")},
        ),
    )
    # Every field shown is read-only: the inbox is a record.
    readonly_fields = flatten_fieldsets(fieldsets)

    @admin.display(description="key", ordering="id")
    def short_key(self, obj: InboundEvent) -> str:
        return cut(obj.idempotency_key, chars=KEY_CHARS, one_line=True)

    @admin.display(description="contact", ordering="messaging_contact_id")
    def contact(self, obj: InboundEvent) -> str:
        return cut(obj.messaging_contact_id, chars=CONTACT_CHARS, one_line=True) if obj.messaging_contact_id else "-"

    @admin.display(description="status", ordering="status")
    def status_marked(self, obj: InboundEvent) -> str:
        if not obj.warnings:
            return obj.status
        fields = ", ".join(str(w.get("field", "?")) for w in obj.warnings)
        return format_html(
            '{} <span title="{} warning(s): {}">⚠ {}</span>', obj.status, len(obj.warnings), fields, len(obj.warnings)
        )

    @admin.display(description="warnings")
    def warnings_table(self, obj: InboundEvent) -> str:
        if not obj.warnings:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            ((w.get("field", ""), w.get("problem", ""), w.get("value", "")) for w in obj.warnings),
        )
        return format_html(
            "<table><thead><tr><th>field</th><th>problem</th><th>value sent</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="error")
    def error_preview(self, obj: InboundEvent) -> str:
        return cut(obj.error, chars=ERROR_CHARS, one_line=True) if obj.error else "-"

    @admin.display(description="error")
    def error_text(self, obj: InboundEvent) -> str:
        if not obj.error:
            return "-"
        return pre_block(obj.error)

    @admin.display(description="raw data")
    def raw_data_pretty(self, obj: InboundEvent) -> str:
        return json_block(obj.raw_data)

    @admin.display(description="other content")
    def conflict_data_pretty(self, obj: InboundEvent) -> str:
        return json_block(obj.conflict_data) if obj.conflict else "-"

    def has_replay_permission(self, request: HttpRequest) -> bool:
        # The inbox is read-only, so replay is gated on the model's change permission itself.
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.action(description="Replay selected events (failed, parked or rejected only)", permissions=["replay"])
    def replay_selected(self, request: HttpRequest, queryset: QuerySet) -> Any:
        replayable = queryset.filter(status__in=REPLAYABLE_STATUSES).order_by("id")
        queued = replay_events(replayable.iterator(chunk_size=500))
        skipped = queryset.count() - queued
        text = f"Queued {queued} event(s) for replay."
        if skipped:
            text += f" Skipped {skipped} that were not failed, parked or rejected."
        self.message_user(request, text, messages.SUCCESS if queued else messages.WARNING)

    @admin.action(description="Resolve conflicts: replay the newer content", permissions=["replay"])
    def resolve_conflicts(self, request: HttpRequest, queryset: QuerySet) -> Any:
        results = [
            conflict_resolve(row_id=pk)
            for pk in queryset.filter(conflict=ConflictState.OPEN).values_list("pk", flat=True)
        ]
        replayed = sum(1 for r in results if r.resolution == Resolution.REPLAYED)
        kept = sum(1 for r in results if r.resolution == Resolution.KEPT)
        text = (
            f"Resolved {len(results)} conflict(s): replayed the newer content of {replayed}, "
            f"kept the applied content of {kept}."
        )
        self.message_user(request, text, messages.SUCCESS if results else messages.WARNING)


# The index links to the pipeline health page (`messaging_events.pipeline_page`). A template of the
# same name as the admin's own would lose to it: django.contrib.admin comes first in INSTALLED_APPS.
admin.site.index_template = "admin/index_with_pipeline.html"
