"""Rendering that needs the admin: list columns built from a field, links to a filtered changelist.

Values themselves (times, JSON, cut text) are rendered by `crm.display`, which needs no admin;
everything here also goes through format_html, so event text is always escaped.
"""

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from crm.display import when


def when_column(field: str, description: str | None = None) -> Any:
    """A list column showing a datetime field as "3 hours ago" (exact time on hover), sortable by the field."""

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def column(obj: Any) -> str:
        return when(getattr(obj, field))

    column.__name__ = f"{field}_humanised"
    return column


def changelist_link(model: type[Model], text: str, **params: Any) -> str:
    """A link to `model`'s list filtered by `params` (for example `profile=<id>`)."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(params), text)
