"""Tenants are created on first sight (docs/decisions.md): the Messaging service owns the list."""

from django.db import connection

from crm.models import Tenant

_CREATE_MANY_SQL = """
INSERT INTO crm_tenant (external_id, name, created_at) SELECT e, '', now() FROM unnest(%s::text[]) AS e ORDER BY e
ON CONFLICT (external_id) DO NOTHING
"""


def tenants_create(external_ids: list[str]) -> None:
    """Create the tenants of these external ids that do not exist yet, in one statement. Safe under concurrency."""
    if not external_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(_CREATE_MANY_SQL, [sorted(set(external_ids))])


def tenant_get_or_create(external_id: str) -> Tenant:
    """The tenant with this external id (the producer's `tenantId`), created if new. Safe under concurrency."""
    tenant = Tenant.objects.filter(external_id=external_id).first()
    if tenant is not None:
        return tenant
    tenants_create([external_id])
    return Tenant.objects.get(external_id=external_id)
