"""Every row a profile owns names its profile's tenant, and the database refuses any other
(crm.models.owning_profile)."""

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, models, transaction

from crm.models import ContactLink, Profile, Tenant


def _profile_owned() -> list[type[models.Model]]:
    """The CRM models with a foreign key to a profile and one to a tenant: found, not listed, so that a new one
    is covered too."""
    owned = []
    for model in apps.get_app_config("crm").get_models():
        targets = {
            field.name: field.related_model
            for field in model._meta.concrete_fields
            if isinstance(field, models.ForeignKey)
        }
        if targets.get("profile") is Profile and targets.get("tenant") is Tenant:
            owned.append(model)
    return owned


def _foreign_keys(table: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """name: (referenced table, columns, referenced columns) of each foreign key of `table`."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.conname, c.confrelid::regclass::text,
                   ARRAY(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY k (n, i)
                         JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.n ORDER BY k.i),
                   ARRAY(SELECT attname FROM unnest(c.confkey) WITH ORDINALITY k (n, i)
                         JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.n ORDER BY k.i)
            FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid = %s::regclass
            """,
            [table],
        )
        return {name: (target, columns, referenced) for name, target, columns, referenced in cursor.fetchall()}


@pytest.mark.django_db
def test_each_profile_owned_table_has_one_key_to_its_profile_and_tenant_together() -> None:
    owned = _profile_owned()
    assert len(owned) == 8
    for model in owned:
        keys = list(_foreign_keys(model._meta.db_table).values())
        to_profile = [key for key in keys if key[0] == "crm_profile"]
        assert to_profile == [("crm_profile", ["profile_id", "tenant_id"], ["id", "tenant_id"])], model
        assert not [key for key in keys if key[0] == "crm_tenant"], model  # checked through the profile


@pytest.mark.django_db
def test_a_row_naming_another_tenant_than_its_profiles_is_refused() -> None:
    ours, theirs = Tenant.objects.create(external_id="keys-a"), Tenant.objects.create(external_id="keys-b")
    profile = Profile.objects.create(tenant=ours)
    ContactLink.objects.create(tenant=ours, profile=profile, messaging_contact_id="keys-1")
    with pytest.raises(IntegrityError, match="profile_tenant_fk"), transaction.atomic():
        ContactLink.objects.create(tenant=theirs, profile=profile, messaging_contact_id="keys-2")
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # deferred to commit otherwise
    assert list(ContactLink.objects.values_list("messaging_contact_id", flat=True)) == ["keys-1"]
