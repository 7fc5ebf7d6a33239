"""Backfill checkpoints (`backfill_contacts --resume`), for superusers to read."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from crm.admin.html import when_column
from crm.models import BackfillCheckpoint


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
