"""The back office. Every CRM model is here, scoped to the staff user's tenants (see `admin_scoping`).

Event-derived records are read-only for staff; the consent ledger is append-only for everyone.
Writes that carry business rules (staff profile edits, hand-recorded consent, score refreshes)
go through the CRM services, never straight to the ORM.
"""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from crm.admin_scoping import (
    ImmutableAdminMixin,
    ReadOnlyForStaffMixin,
    ScopedRelatedFieldListFilter,
    TenantScopedAdminMixin,
    sees_all_tenants,
)
from crm.display import key_value_line, key_value_list, when
from crm.errors import ApplicationError
from crm.models import (
    Activity,
    AttributionEvent,
    BackfillCheckpoint,
    CampaignInteraction,
    Channel,
    ConsentChange,
    ContactAddress,
    ContactLink,
    HardBounce,
    MarketingConsent,
    PendingScoreRefresh,
    Profile,
    Segment,
    SegmentMembership,
    Tenant,
)
from crm.normalise import email_normalise, phone_normalise
from crm.services.contact_points import address_kind
from crm.services.profiles import consent_report_disagreements

INLINE_ROW_LIMIT = 50

# Search on the person wherever a row points at a profile. contactIds are exact (unique index).
PROFILE_SEARCH = (
    "profile__email",
    "profile__phone",
    "profile__first_name",
    "profile__last_name",
    "profile__contact_links__messaging_contact_id__exact",
)
TENANT_FILTER = ("tenant", ScopedRelatedFieldListFilter)


# --- Rendering helpers: everything goes through format_html, so event text is always escaped ---


def json_text(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False, default=str)


def json_block(value: Any) -> str:
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', json_text(value, indent=2))


def admin_link(obj: Any, text: str | None = None) -> str:
    if obj is None:
        return "-"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else str(obj))


def changelist_link(model: type, text: str, **params: Any) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(params), text)


def when_column(field: str, description: str | None = None) -> Any:
    """A list column showing a datetime field as "3 hours ago" (exact time on hover), sortable by the field."""

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def column(obj: Any) -> str:
        return when(getattr(obj, field))

    column.__name__ = f"{field}_humanised"
    return column


def yes_no_unknown(value: bool | None) -> str:
    return {True: "opted in", False: "opted out", None: "no statement"}[value]


class ChannelFilter(admin.SimpleListFilter):
    """Channel choices from the model's enum, not a DISTINCT over a large table."""

    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(Channel.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(channel=self.value()) if self.value() else queryset


# --- Bases ---


class ScopedModelAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    show_full_result_count = False
    list_per_page = 100


class WideListMixin:
    """Lists whose every column must show at 1280 px: the app sidebar gives its width to the list."""

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"is_nav_sidebar_enabled": False, **(extra_context or {})})


class EventDerivedAdmin(ReadOnlyForStaffMixin, ScopedModelAdmin):
    """Rows written by the event handlers: staff read them, only superusers may correct them."""


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
        formset.row_limit = self.row_limit
        return formset

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Tenant ---


@admin.register(Tenant)
class TenantAdmin(ReadOnlyForStaffMixin, ScopedModelAdmin):
    list_display = ("name", "external_id", when_column("created_at", "created"))
    search_fields = ("name", "external_id")
    ordering = ("name", "external_id")
    filter_horizontal = ("staff",)
    readonly_fields = ("created_at",)


# --- Profile ---


class ProfileAdminForm(forms.ModelForm):
    """Normalises identity fields the way events do: lower-cased email, E.164 phone."""

    class Meta:
        model = Profile
        fields = ("first_name", "last_name", "email", "phone", "email_verified", "phone_verified")

    def clean_email(self) -> str:
        value = self.cleaned_data.get("email", "")
        if not value:
            return ""
        try:
            return email_normalise(value)
        except ApplicationError as exc:
            raise forms.ValidationError(f"Email {exc.message}.") from None

    def clean_phone(self) -> str:
        value = self.cleaned_data.get("phone", "")
        if not value:
            return ""
        try:
            return phone_normalise(value)
        except ApplicationError as exc:
            raise forms.ValidationError(f"Phone {exc.message}.") from None


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


class StaffConsentForm(forms.Form):
    channel = forms.ChoiceField(choices=Channel.choices)
    opted_in = forms.TypedChoiceField(
        label="Decision",
        choices=(("true", "Opted in"), ("false", "Opted out")),
        coerce=lambda value: value == "true",
        widget=forms.RadioSelect,
    )
    lawful_basis = forms.CharField(
        max_length=300,
        help_text="The evidence: who asked, how and when (for example “phoned support on 2024-05-01 to stop SMS”).",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )


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

    # -- hand-recorded consent --

    def get_urls(self):
        urls = [
            path(
                "<path:object_id>/consent/",
                self.admin_site.admin_view(self.record_consent_view),
                name="crm_profile_record_consent",
            )
        ]
        return urls + super().get_urls()

    def record_consent_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        from crm.services.consent import consent_record_by_staff

        profile = self.get_object(request, object_id)  # scoped: another tenant's profile is a 404
        if not self.has_change_permission(request, profile):
            raise PermissionDenied
        form = StaffConsentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                consent_record_by_staff(
                    profile=profile,
                    channel=form.cleaned_data["channel"],
                    opted_in=form.cleaned_data["opted_in"],
                    user=request.user,
                    lawful_basis=form.cleaned_data["lawful_basis"],
                )
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                verb = "opt-in" if form.cleaned_data["opted_in"] else "opt-out"
                self.message_user(
                    request,
                    f"Recorded a {form.cleaned_data['channel']} {verb} in the consent ledger.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:crm_profile_change", args=[profile.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": profile,
            "title": f"Record a consent change for {profile}",
            "form": form,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/crm/profile/record_consent.html", context)


# --- Event-derived records ---


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


@admin.register(BackfillCheckpoint)
class BackfillCheckpointAdmin(admin.ModelAdmin):
    """How far each `backfill_contacts` file got. A checkpoint names no tenant (one file may hold
    several), so only superusers see them; nobody edits them here (`--resume` owns them)."""

    list_display = ("file_name", "last_line", "rows_done", "completed", when_column("updated_at", "updated"))
    list_filter = ("completed",)
    search_fields = ("file_name", "file_sha256__exact")
    ordering = ("-updated_at",)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Segments ---


class SegmentAdminForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ("tenant", "name", "required_consent_channel", "min_engagement_score", "require_verified_email")


@admin.register(Segment)
class SegmentAdmin(ScopedModelAdmin):
    form = SegmentAdminForm
    list_display = (
        "name",
        "tenant",
        "member_count_link",
        "required_consent_channel",
        "min_engagement_score",
        "require_verified_email",
    )
    list_filter = (TENANT_FILTER, "required_consent_channel", "require_verified_email")
    list_select_related = ("tenant",)
    search_fields = ("name",)
    ordering = ("tenant", "name")
    # Not "members": that name is the model's many-to-many field, which the admin would render instead,
    # every member's name in one unbounded field.
    readonly_fields = ("member_count_link",)
    actions = ("rebuild_membership",)

    def save_model(self, request: HttpRequest, obj: Segment, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        rules = {"required_consent_channel", "min_engagement_score", "require_verified_email"}
        if not change or rules & set(form.changed_data):
            self.message_user(
                request,
                "The rules are saved. Members follow them as profiles change; to apply them to everyone now, "
                "use the “Rebuild membership” action.",
                messages.INFO,
            )

    @admin.action(description="Rebuild membership of the selected segments", permissions=["change"])
    def rebuild_membership(self, request: HttpRequest, queryset: QuerySet) -> None:
        from crm.services.segments import segment_rebuild

        for segment in queryset:
            members = segment_rebuild(segment=segment)
            self.message_user(request, f"{segment}: {members} member(s).", messages.SUCCESS)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "tenant"] if obj is not None else fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def member_count_link(self, obj: Segment) -> str:
        if obj.pk is None:
            return "-"
        return changelist_link(SegmentMembership, f"{obj.member_count} member(s)", segment=obj.pk)


@admin.register(SegmentMembership)
class SegmentMembershipAdmin(EventDerivedAdmin):
    """Computed from the segment rules; never edited by hand."""

    list_display = ("segment", "profile", "tenant", when_column("added_at", "added"))
    list_filter = (("segment", ScopedRelatedFieldListFilter), TENANT_FILTER)
    list_select_related = ("segment", "profile", "tenant")
    search_fields = ("segment__name", *PROFILE_SEARCH)
    raw_id_fields = ("profile", "segment")
    ordering = ("-id",)
