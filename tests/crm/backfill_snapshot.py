"""Every CRM table in a form two imports can be compared by: generated ids and clock times left out.

A profile is named by the contact ids linked to it (or its fields when it has none), a consent
statement by its profile, channel and tiebreak, a tenant by its external id, a segment by its name.
The columns are read from the models, so a column added later is compared too.
"""

import json
from collections import defaultdict
from typing import Any

from django.apps import apps
from django.db import connection, models

from crm.models import BackfillCheckpoint, ConsentChange, ContactLink, Profile, Segment, Tenant

CLOCK_FIELDS = {"created_at", "updated_at", "recorded_at", "added_at", "requested_at", "engagement_scored_at"}
CLOCK_KEYS = {"computed_at"}  # inside JSON data (the engagement breakdown)
SKIPPED_MODELS = {BackfillCheckpoint}


def _names() -> dict[type[models.Model], dict[Any, Any]]:
    tenants = dict(Tenant.objects.values_list("id", "external_id"))
    linked: dict[int, list[str]] = defaultdict(list)
    for profile_id, contact in ContactLink.objects.values_list("profile_id", "messaging_contact_id"):
        linked[profile_id].append(contact)
    profiles = {}
    for pk, tenant_id, email, phone, first in Profile.objects.values_list(
        "id", "tenant_id", "email", "phone", "first_name"
    ):
        contacts = sorted(linked.get(pk, ()))
        profiles[pk] = ("contacts", *contacts) if contacts else ("unlinked", tenants[tenant_id], email, phone, first)
    changes = {
        pk: (profiles.get(profile_id), channel, tiebreak)
        for pk, profile_id, channel, tiebreak in ConsentChange.objects.values_list(
            "id", "profile_id", "channel", "tiebreak"
        )
    }
    segments = {pk: (tenants[t], name) for pk, t, name in Segment.objects.values_list("id", "tenant_id", "name")}
    return {Tenant: tenants, Profile: profiles, ConsentChange: changes, Segment: segments}


def _json(value: Any, names: dict) -> Any:
    """Ids inside JSON data (activity data: consent_change_id, email_profile_id, …) replaced by names."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in CLOCK_KEYS:
                continue
            if key.endswith("profile_id") and isinstance(item, int):
                item = names[Profile].get(item, "<deleted profile>")
            elif key == "consent_change_id" and isinstance(item, int):
                item = names[ConsentChange].get(item, "<deleted change>")
            else:
                item = _json(item, names)
            out[key] = item
        return out
    if isinstance(value, list):
        return [_json(item, names) for item in value]
    return value


def crm_snapshot() -> dict[str, list[str]]:
    names = _names()
    snapshot = {}
    for model in apps.get_app_config("crm").get_models():
        if model in SKIPPED_MODELS:
            continue
        fields = [f for f in model._meta.concrete_fields if not f.primary_key and f.name not in CLOCK_FIELDS]
        rows = []
        for pk, *values in model.objects.values_list("pk", *(f.attname for f in fields)):
            row = {"pk": names[model].get(pk, "<missing>")} if model in names else {}
            for f, value in zip(fields, values, strict=True):
                if f.is_relation and f.related_model in names and value is not None:
                    value = names[f.related_model].get(value, "<missing>")
                elif isinstance(f, models.JSONField):
                    value = _json(value, names)
                row[f.name] = value
            rows.append(json.dumps(row, sort_keys=True, default=str))
        snapshot[model.__name__] = sorted(rows)
    return snapshot


def crm_flush() -> None:
    """Empty every CRM table (inside the test's transaction)."""
    tables = [m._meta.db_table for m in apps.get_app_config("crm").get_models(include_auto_created=True)]
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred foreign-key checks run now, not on TRUNCATE
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
