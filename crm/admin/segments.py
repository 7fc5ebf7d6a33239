"""Segments: staff (editors) write the rules, the CRM computes the members. Rebuilding goes through
`segment_rebuild`; memberships are never edited by hand."""

from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from crm.admin.base import PROFILE_SEARCH, TENANT_FILTER, EventDerivedAdmin, ScopedModelAdmin
from crm.admin.forms import SegmentAdminForm
from crm.admin.html import changelist_link, when_column
from crm.admin_scoping import ScopedRelatedFieldListFilter
from crm.models import Segment, SegmentMembership

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class _MemberCount(TypedDict):
        member_count: int

    # A segment as `SegmentAdmin.get_queryset` returns it.
    CountedSegment = WithAnnotations[Segment, _MemberCount]


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
        from crm.services.segments import segment_rebuild  # where it is called: the tests replace it

        for segment in queryset:
            members = segment_rebuild(segment=segment)
            self.message_user(request, f"{segment}: {members} member(s).", messages.SUCCESS)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "tenant"] if obj is not None else fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def member_count_link(self, obj: "CountedSegment") -> str:
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
