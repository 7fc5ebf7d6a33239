"""The read-only lists on a profile's page: its contact ids, consent state and ledger, timeline, interactions,
attributions and segments. Each shows the latest rows only; the full lists are the record admins'."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from crm.admin.html import when_column
from crm.admin_scoping import TenantScopedAdminMixin
from crm.display import key_value_line
from crm.models import (
    Activity,
    AttributionEvent,
    CampaignInteraction,
    ConsentChange,
    ContactLink,
    MarketingConsent,
    SegmentMembership,
)

INLINE_ROW_LIMIT = 50


class LimitedInlineFormSet(BaseInlineFormSet):
    """Shows at most `row_limit` rows: the inline's ordering decides which (the latest first)."""

    row_limit = INLINE_ROW_LIMIT

    def get_queryset(self) -> QuerySet:
        if not hasattr(self, "_limited_queryset"):
            self._limited_queryset = super().get_queryset()[: self.row_limit]
        return self._limited_queryset


class ReadOnlyInline(TenantScopedAdminMixin, admin.TabularInline):
    formset = LimitedInlineFormSet
    row_limit = INLINE_ROW_LIMIT
    extra = 0
    can_delete = False
    show_change_link = True
    select_related: tuple[str, ...] = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        return queryset.select_related(*self.select_related) if self.select_related else queryset

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any):
        formset = super().get_formset(request, obj, **kwargs)
        assert issubclass(formset, LimitedInlineFormSet)  # Django builds it on `self.formset`
        formset.row_limit = self.row_limit
        return formset

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ContactLinkInline(ReadOnlyInline):
    model = ContactLink
    fields = ("messaging_contact_id", when_column("created_at", "linked"))
    readonly_fields = fields
    ordering = ("created_at",)
    verbose_name_plural = "Messaging contact ids"


class MarketingConsentInline(ReadOnlyInline):
    model = MarketingConsent
    fields = ("channel", "address", "opted_in", when_column("changed_at", "decided"), "source")
    readonly_fields = fields
    ordering = ("channel",)
    verbose_name_plural = "Consent state (current, per channel)"


class ConsentChangeInline(ReadOnlyInline):
    model = ConsentChange
    fields = (
        when_column("occurred_at", "occurred"),
        "channel",
        "address",
        "address_stated",
        "opted_in",
        "source",
        "superseded",
        "actor",
        "lawful_basis",
        "warning",
        when_column("recorded_at", "recorded"),
    )
    readonly_fields = fields
    ordering = ("-occurred_at", "-tiebreak")
    select_related = ("actor",)
    verbose_name_plural = f"Consent ledger (latest {INLINE_ROW_LIMIT})"


class ActivityInline(ReadOnlyInline):
    model = Activity
    fields = (when_column("occurred_at", "occurred"), "type", "data_preview")
    readonly_fields = fields
    ordering = ("-occurred_at", "-id")
    verbose_name_plural = f"Timeline (latest {INLINE_ROW_LIMIT} activities)"

    @admin.display(description="data")
    def data_preview(self, obj: Activity) -> str:
        return key_value_line(obj.data)


class CampaignInteractionInline(ReadOnlyInline):
    model = CampaignInteraction
    fields = (
        when_column("last_at", "last"),
        "type",
        "message_id",
        "campaign_id",
        "channel",
        "count",
        when_column("first_at", "first"),
    )
    readonly_fields = fields
    ordering = ("-last_at", "-id")
    verbose_name_plural = f"Campaign interactions (latest {INLINE_ROW_LIMIT})"


class AttributionEventInline(ReadOnlyInline):
    model = AttributionEvent
    fields = (
        when_column("occurred_at", "occurred"),
        "campaign_id",
        "message_id",
        "link_url",
        "utm_source",
        "utm_medium",
        "utm_campaign",
    )
    readonly_fields = fields
    ordering = ("-occurred_at", "-id")
    verbose_name_plural = f"Attributions (latest {INLINE_ROW_LIMIT})"


class SegmentMembershipInline(ReadOnlyInline):
    model = SegmentMembership
    fields = ("segment", when_column("added_at", "added"))
    readonly_fields = fields
    ordering = ("segment__name",)
    select_related = ("segment",)
    verbose_name_plural = "Segments"
