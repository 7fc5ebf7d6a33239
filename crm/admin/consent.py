"""Consent, where nobody edits: the current state per channel, the append-only ledger, and the addresses
each Messaging contact stated (what a statement without an address is about). A statement is
recorded on the profile's page (`views.record_consent_view`) or by an event, never here."""

from django.contrib import admin

from crm.admin.base import PROFILE_SEARCH, TENANT_FILTER, EventDerivedAdmin, ScopedModelAdmin
from crm.admin.html import when_column
from crm.admin_scoping import ImmutableAdminMixin
from crm.models import ConsentChange, ContactAddress, MarketingConsent


@admin.register(MarketingConsent)
class MarketingConsentAdmin(ImmutableAdminMixin, ScopedModelAdmin):
    """Current state is derived from the ledger; change it by recording a statement on the profile."""

    list_display = (
        "profile",
        "channel",
        "address",
        "opted_in",
        when_column("changed_at", "decided"),
        "source",
        "tenant",
    )
    list_filter = ("channel", "opted_in", "source", TENANT_FILTER)
    list_select_related = ("profile", "tenant")
    search_fields = PROFILE_SEARCH
    ordering = ("-id",)


@admin.register(ConsentChange)
class ConsentChangeAdmin(ImmutableAdminMixin, ScopedModelAdmin):
    """The append-only legal ledger: nobody changes or deletes an entry."""

    list_display = (
        when_column("occurred_at", "occurred"),
        "profile",
        "channel",
        "address",
        "opted_in",
        "source",
        "superseded",
        "actor",
        "tenant",
    )
    list_filter = ("channel", "opted_in", "source", "superseded", "address_stated", TENANT_FILTER)
    list_select_related = ("profile", "tenant", "actor")
    search_fields = ("address__exact", "contact_id__exact", *PROFILE_SEARCH)
    ordering = ("-id",)


@admin.register(ContactAddress)
class ContactAddressAdmin(EventDerivedAdmin):
    """The emails and phones each Messaging contact's events stated: what consent statements without an
    address are about."""

    list_display = (when_column("occurred_at", "occurred"), "contact_id", "kind", "address", "tenant")
    list_filter = ("kind", TENANT_FILTER)
    list_select_related = ("tenant",)
    search_fields = ("contact_id__exact", "address__exact")
    ordering = ("-occurred_at",)
