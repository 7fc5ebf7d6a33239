"""The records the event handlers write, one list each: contact links, the activity timeline, campaign
interactions, attributions, hard bounces and pending score refreshes. Staff read them; only
superusers may correct them (`EventDerivedAdmin`)."""

from django.contrib import admin

from crm.admin.base import PROFILE_SEARCH, TENANT_FILTER, ChannelFilter, EventDerivedAdmin
from crm.admin.html import when_column
from crm.display import key_value_line, key_value_list
from crm.models import (
    Activity,
    AttributionEvent,
    CampaignInteraction,
    ContactLink,
    HardBounce,
    PendingScoreRefresh,
)


@admin.register(ContactLink)
class ContactLinkAdmin(EventDerivedAdmin):
    list_display = ("messaging_contact_id", "profile", "tenant", when_column("created_at", "linked"))
    list_filter = (TENANT_FILTER,)
    list_select_related = ("profile", "tenant")
    search_fields = ("messaging_contact_id__exact", *PROFILE_SEARCH[:4])
    autocomplete_fields = ("profile",)
    ordering = ("-id",)


@admin.register(Activity)
class ActivityAdmin(EventDerivedAdmin):
    list_display = (when_column("occurred_at", "occurred"), "type", "profile", "tenant", "data_preview")
    list_filter = ("type", TENANT_FILTER)
    list_select_related = ("profile", "tenant")
    search_fields = PROFILE_SEARCH
    raw_id_fields = ("profile", "source_event")
    readonly_fields = ("data_pretty", "created_at")
    ordering = ("-id",)

    @admin.display(description="data")
    def data_preview(self, obj: Activity) -> str:
        return key_value_line(obj.data)

    @admin.display(description="data (formatted)")
    def data_pretty(self, obj: Activity) -> str:
        return key_value_list(obj.data)


@admin.register(CampaignInteraction)
class CampaignInteractionAdmin(EventDerivedAdmin):
    list_display = (
        "message_id",
        "type",
        "campaign_id",
        "channel",
        "count",
        "profile",
        when_column("first_at", "first"),
        when_column("last_at", "last"),
    )
    list_filter = ("type", ChannelFilter, TENANT_FILTER)
    list_select_related = ("profile",)
    search_fields = ("message_id__exact", "campaign_id__exact", *PROFILE_SEARCH)
    raw_id_fields = ("profile",)
    ordering = ("-id",)


@admin.register(AttributionEvent)
class AttributionEventAdmin(EventDerivedAdmin):
    list_display = (
        when_column("occurred_at", "occurred"),
        "campaign_id",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "profile",
        "link_url",
    )
    list_filter = (TENANT_FILTER,)
    list_select_related = ("profile",)
    search_fields = ("campaign_id__exact", "message_id__exact", "utm_campaign", *PROFILE_SEARCH)
    raw_id_fields = ("profile", "source_event")
    ordering = ("-id",)


@admin.register(HardBounce)
class HardBounceAdmin(EventDerivedAdmin):
    list_display = (when_column("occurred_at", "occurred"), "message_id", "profile", "tenant")
    list_filter = (TENANT_FILTER,)
    list_select_related = ("profile", "tenant")
    search_fields = ("message_id__exact", *PROFILE_SEARCH)
    raw_id_fields = ("profile",)
    ordering = ("-occurred_at",)


@admin.register(PendingScoreRefresh)
class PendingScoreRefreshAdmin(EventDerivedAdmin):
    list_display = ("profile", when_column("requested_at", "requested"))
    list_select_related = ("profile",)
    search_fields = PROFILE_SEARCH
    raw_id_fields = ("profile",)
    ordering = ("requested_at",)
