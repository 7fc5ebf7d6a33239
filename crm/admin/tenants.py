"""Tenants: staff see their own; superusers see all and choose each tenant's staff
(`grant_tenant_access` does the same from the command line)."""

from django.contrib import admin

from crm.admin.base import ScopedModelAdmin
from crm.admin.html import when_column
from crm.admin_scoping import ReadOnlyForStaffMixin
from crm.models import Tenant


@admin.register(Tenant)
class TenantAdmin(ReadOnlyForStaffMixin, ScopedModelAdmin):
    list_display = ("name", "external_id", when_column("created_at", "created"))
    search_fields = ("name", "external_id")
    ordering = ("name", "external_id")
    filter_horizontal = ("staff",)
    readonly_fields = ("created_at",)
