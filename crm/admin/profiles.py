"""The profile admin: one person's page (identity, consent, engagement, provenance, and the inlines),
the profile list and its phone-aware search.

Staff edits, hand-recorded consent and score refreshes go through the CRM services, never straight
to the ORM; the provenance rule and the consent ledger are theirs. The services that write are
imported where they are called: the admin tests put a recorder in their place in `sys.modules`.
"""

from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path
from django.utils.html import format_html, format_html_join

from crm.admin.base import TENANT_FILTER, ScopedModelAdmin, WideListMixin
from crm.admin.forms import ProfileAdminForm
from crm.admin.html import changelist_link, when_column
from crm.admin.inlines import (
    ActivityInline,
    AttributionEventInline,
    CampaignInteractionInline,
    ConsentChangeInline,
    ContactLinkInline,
    MarketingConsentInline,
    SegmentMembershipInline,
)
from crm.admin.views import record_consent_view
from crm.admin_scoping import sees_all_tenants
from crm.display import key_value_list, when
from crm.errors import ApplicationError
from crm.models import Activity, AttributionEvent, CampaignInteraction, Channel, ConsentChange, Profile
from crm.normalise import phone_normalise
from crm.services.contact_points import address_kind
from crm.services.profiles import consent_report_disagreements


def yes_no_unknown(value: bool | None) -> str:
    return {True: "opted in", False: "opted out", None: "no statement"}[value]


# The profile's own times, humanised; one callable each, so that fieldsets and readonly_fields name the same one.
PROFILE_TIMES = {
    name: when_column(name, name.removesuffix("_at").replace("_", " "))
    for name in (
        "engagement_scored_at",
        "last_message_at",
        "last_activity_at",
        "last_email_open_at",
        "created_at",
        "updated_at",
    )
}


@admin.register(Profile)
class ProfileAdmin(WideListMixin, ScopedModelAdmin):
    form = ProfileAdminForm
    list_display = (
        "__str__",
        "email",
        "phone",
        "tenant",
        "score",
        "consent_summary",
        when_column("last_activity_at", "last activity"),
    )
    list_display_links = ("__str__", "email")
    list_filter = (
        TENANT_FILTER,
        "email_opt_in",
        "sms_opt_in",
        "push_opt_in",
        "whatsapp_opt_in",
        "email_verified",
        "phone_verified",
        "is_stub",
    )
    list_select_related = ("tenant",)
    search_fields = ("email", "phone", "first_name", "last_name", "contact_links__messaging_contact_id__exact")
    ordering = ("-id",)
    actions = ("recompute_engagement_score",)
    readonly_fields = (
        "tenant",
        "is_stub",
        "consent_state",
        "engagement_score",
        PROFILE_TIMES["engagement_scored_at"],
        "engagement_breakdown_table",
        PROFILE_TIMES["last_message_at"],
        PROFILE_TIMES["last_activity_at"],
        PROFILE_TIMES["last_email_open_at"],
        "related_lists",
        "field_sources_table",
        PROFILE_TIMES["created_at"],
        PROFILE_TIMES["updated_at"],
    )
    fieldsets = (
        (None, {"fields": ("tenant", "first_name", "last_name", "email", "phone", "is_stub")}),
        ("Verification", {"fields": ("email_verified", "phone_verified")}),
        ("Consent", {"fields": ("consent_state",)}),
        (
            "Engagement",
            {
                "fields": (
                    "engagement_score",
                    PROFILE_TIMES["engagement_scored_at"],
                    "engagement_breakdown_table",
                )
            },
        ),
        (
            "Activity",
            {
                "fields": (
                    PROFILE_TIMES["last_message_at"],
                    PROFILE_TIMES["last_activity_at"],
                    PROFILE_TIMES["last_email_open_at"],
                    "related_lists",
                )
            },
        ),
        (
            "Provenance",
            {
                "fields": ("field_sources_table", PROFILE_TIMES["created_at"], PROFILE_TIMES["updated_at"]),
                "classes": ("collapse",),
            },
        ),
    )
    inlines = (
        ContactLinkInline,
        MarketingConsentInline,
        ConsentChangeInline,
        ActivityInline,
        CampaignInteractionInline,
        AttributionEventInline,
        SegmentMembershipInline,
    )

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        # Phones are stored in E.164: "082 111 0000" finds "+27821110000" (default region from settings).
        try:
            phone = phone_normalise(search_term)
        except ApplicationError:
            return results, may_have_duplicates
        if not phone:
            return results, may_have_duplicates
        return results | queryset.filter(phone=phone), may_have_duplicates

    # Profiles come from events (identity resolution): a hand-made one would have no contactId.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return sees_all_tenants(request.user) and super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Profile, form: forms.ModelForm, change: bool) -> None:
        """Staff edits go through the service, which records their provenance (and never reach the ORM here)."""
        from crm.services.profiles import profile_update_by_staff

        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        if not changes:
            return
        current = Profile.objects.get(pk=obj.pk)
        try:
            profile_update_by_staff(profile=current, changes=changes, user=request.user)
        except ApplicationError as exc:
            self.message_user(request, f"Not saved: {exc.message}", messages.ERROR)
        obj.refresh_from_db()

    # -- read-only panels --

    @admin.display(description="consent")
    def consent_state(self, obj: Profile) -> str:
        if obj.pk is None:
            return "-"
        states = {c.channel: c for c in obj.consents.all()}
        rows = []
        for channel in Channel.values:
            state = states.get(channel)
            kind = address_kind(channel)
            rows.append(
                (
                    channel,
                    (getattr(obj, kind) or "none held") if kind else "-",
                    yes_no_unknown(obj.opt_in(channel)),
                    when(state.changed_at) if state else "-",
                    state.get_source_display() if state and state.source else "-",
                )
            )
        # "Record consent change" (top right) appends a staff statement to the ledger.
        table = format_html(
            "<table><thead><tr><th>channel</th><th>for address</th><th>state</th><th>decided at</th><th>source</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )
        # contact.updated reports consent without deciding it: a disagreement is for staff to follow up.
        disagreements = consent_report_disagreements(profile=obj)
        if not disagreements:
            return table
        notes = format_html_join(
            "",
            '<li class="consent-disagreement">{} (CRM: {})</li>',
            ((str(d), yes_no_unknown(d.crm)) for d in disagreements),
        )
        return format_html("{}<ul>{}</ul>", table, notes)

    @admin.display(description="score", ordering="engagement_score")
    def score(self, obj: Profile) -> str:
        return "-" if obj.engagement_score is None else f"{obj.engagement_score:.1f}"

    @admin.display(description="consent")
    def consent_summary(self, obj: Profile) -> str:
        marks = {True: "✓", False: "✗", None: "?"}
        return " ".join(f"{channel} {marks[obj.opt_in(channel)]}" for channel in (Channel.EMAIL, Channel.SMS))

    @admin.display(description="score breakdown")
    def engagement_breakdown_table(self, obj: Profile) -> str:
        breakdown = obj.engagement_breakdown or {}
        if not breakdown:
            return "Not computed yet."
        return key_value_list(breakdown)

    @admin.display(description="all records")
    def related_lists(self, obj: Profile) -> str:
        if obj.pk is None:
            return "-"
        lists = (
            (Activity, "activities", obj.activities.count()),
            (ConsentChange, "consent ledger entries", obj.consent_changes.count()),
            (CampaignInteraction, "campaign interactions", obj.interactions.count()),
            (AttributionEvent, "attributions", obj.attributions.count()),
        )
        return format_html_join(
            " · ", "{}", ((changelist_link(model, f"{n} {label}", profile=obj.pk),) for model, label, n in lists)
        )

    @admin.display(description="field provenance")
    def field_sources_table(self, obj: Profile) -> str:
        return key_value_list(obj.field_sources or {})

    # -- actions --

    @admin.action(description="Recompute engagement score", permissions=["change"])
    def recompute_engagement_score(self, request: HttpRequest, queryset: QuerySet) -> None:
        from crm.services.engagement import engagement_score_refresh

        count = 0
        for profile in queryset.iterator(chunk_size=200):
            engagement_score_refresh(profile=profile)
            count += 1
        self.message_user(request, f"Recomputed the engagement score of {count} profile(s).", messages.SUCCESS)

    # -- hand-recorded consent (`views.record_consent_view`) --

    def get_urls(self) -> list[URLPattern]:
        urls = [
            path(
                "<path:object_id>/consent/",
                self.admin_site.admin_view(partial(record_consent_view, model_admin=self)),
                name="crm_profile_record_consent",
            )
        ]
        return urls + super().get_urls()
