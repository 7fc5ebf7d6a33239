"""What every CRM and inbox admin is built from: the tenant-scoped base classes and the shared filters
and searches. The scoping itself is `crm.admin_scoping`."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from crm.admin_scoping import AdminBase, ReadOnlyForStaffMixin, ScopedRelatedFieldListFilter, TenantScopedAdminMixin
from crm.models import Channel

# Search on the person wherever a row points at a profile. contactIds are exact (unique index).
PROFILE_SEARCH = (
    "profile__email",
    "profile__phone",
    "profile__first_name",
    "profile__last_name",
    "profile__contact_links__messaging_contact_id__exact",
)
TENANT_FILTER = ("tenant", ScopedRelatedFieldListFilter)


class ChannelFilter(admin.SimpleListFilter):
    """Channel choices from the model's enum, not a DISTINCT over a large table."""

    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(Channel.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(channel=self.value()) if self.value() else queryset


class ScopedModelAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    show_full_result_count = False
    list_per_page = 100


class WideListMixin(AdminBase):
    """Lists whose every column must show at 1280 px: the app sidebar gives its width to the list."""

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"is_nav_sidebar_enabled": False, **(extra_context or {})})


class EventDerivedAdmin(ReadOnlyForStaffMixin, ScopedModelAdmin):
    """Rows written by the event handlers: staff read them, only superusers may correct them."""
