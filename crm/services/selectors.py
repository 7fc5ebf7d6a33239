"""Read-only queries the event handlers need."""

from crm.models import ContactLink
from crm.services.identity import contact_link_check_tenant, contact_link_get


def contact_link_for_event(*, contact_id: str, tenant_external_id: str) -> ContactLink | None:
    """The contact's link (with profile and tenant, one query), or None when unknown.

    Raises `TenantMismatch` when the event states a tenant other than the link's.
    """
    link = contact_link_get(contact_id=contact_id)
    if link is not None:
        contact_link_check_tenant(link=link, tenant_external_id=tenant_external_id)
    return link
