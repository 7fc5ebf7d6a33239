"""Identity: normalised addresses, and which profile a Messaging `contactId` belongs to.

Resolution order for a contact that is not linked yet (or linked to a stub):

1. the existing link
2. the same tenant's profile with the same normalised email
3. then the same phone
4. otherwise a new profile (a stub when the event is not `contact.created`)

Real profiles are preferred to stubs, then the oldest. If the email and the phone point at different
profiles, the email match is chosen and the conflict is returned in `Resolution.conflict`
(`{"email_profile_id", "phone_profile_id", "chosen": "email"}`); the contact services write it into
the `PROFILE_UPDATED` activity's data under `identity_conflict`.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from django.db import connection

from crm.errors import TenantMismatch
from crm.models import ContactLink, Profile, Tenant
from crm.services.locks import advisory_locks_acquire, contact_lock_name
from crm.services.prepared import prepared_cursor
from crm.services.tenants import tenant_get_or_create


def contact_link_get(*, contact_id: str) -> ContactLink | None:
    """The link of a contactId with its profile and tenant, in one query."""
    return ContactLink.objects.select_related("profile", "tenant").filter(messaging_contact_id=contact_id).first()


def contact_link_check_tenant(*, link: ContactLink, tenant_external_id: str) -> None:
    """An event whose stated tenant disagrees with the link's tenant is rejected."""
    if tenant_external_id and link.tenant.external_id != tenant_external_id:
        raise TenantMismatch(
            f"contact {link.messaging_contact_id} belongs to another tenant than {tenant_external_id!r}",
            {"contact_id": link.messaging_contact_id},
        )


def _identity_lock_names(*, tenant_external_id: str, contact_id: str, email: str, phone: str) -> list[str]:
    return [
        contact_lock_name(contact_id),
        f"email:{tenant_external_id}:{email}" if email else "",
        f"phone:{tenant_external_id}:{phone}" if phone else "",
    ]


def identity_lock(*, tenant_external_id: str, contact_id: str, email: str, phone: str) -> None:
    """Serialise identity resolution for this contactId, email and phone (across workers). Named by the
    tenant's external id, so that the lock can be taken before the tenant is looked up (or created)."""
    advisory_locks_acquire(
        *_identity_lock_names(tenant_external_id=tenant_external_id, contact_id=contact_id, email=email, phone=phone)
    )


def identity_locks(identities: Iterable[tuple[str, str, str, str]], *, waits: Iterable[str] = ()) -> None:
    """`identity_lock` for many (tenant external id, contact id, email, phone) at once, and
    `locks.contact_identities_wait` for the contact ids `waits`: one statement, every lock in the one key
    order `advisory_locks_acquire` uses (the worker's set-based sign-ups and messages)."""
    advisory_locks_acquire(
        *(
            name
            for tenant, contact, email, phone in identities
            for name in _identity_lock_names(tenant_external_id=tenant, contact_id=contact, email=email, phone=phone)
        ),
        shared=[contact_lock_name(contact_id) for contact_id in waits],
    )


class Resolved(StrEnum):
    """How `contact_resolve_or_create` found the contact's profile."""

    EXISTING = "existing"  # the contactId was already linked
    LINKED = "linked"  # linked now, to the profile its email or phone matched
    CREATED = "created"  # a new profile (or stub), linked


@dataclass
class Resolution:
    tenant: Tenant | None  # None: the event's tenant is not known yet
    link: ContactLink | None  # None when the contact has no link yet
    current: Profile | None  # the linked profile
    match: Profile | None  # another profile found by email, else phone
    conflict: dict | None


_PROFILE_COLUMNS = [field.column for field in Profile._meta.concrete_fields]
# The tenant, the contact's link and the tenant's first two profiles by email and by phone (real before
# stubs, then the oldest: two, because one of them may be the linked profile itself), in one round trip.
_RESOLVE_SQL = f"""
SELECT r.role, r.link_id, r.tenant_id, r.tenant_external_id, {", ".join(f"p.{c}" for c in _PROFILE_COLUMNS)}
FROM (
    (SELECT 'tenant' AS role, NULL::bigint AS profile_id, NULL::bigint AS link_id, t.id AS tenant_id,
            t.external_id AS tenant_external_id
     FROM crm_tenant t WHERE t.external_id = %(tenant)s)
    UNION ALL
    (SELECT 'link', l.profile_id, l.id, l.tenant_id, lt.external_id
     FROM crm_contactlink l JOIN crm_tenant lt ON lt.id = l.tenant_id WHERE l.messaging_contact_id = %(contact)s)
    UNION ALL
    (SELECT 'email', p.id, NULL, NULL, NULL FROM crm_profile p JOIN crm_tenant t ON t.id = p.tenant_id
     WHERE t.external_id = %(tenant)s AND %(email)s <> '' AND p.email = %(email)s ORDER BY p.is_stub, p.id LIMIT 2)
    UNION ALL
    (SELECT 'phone', p.id, NULL, NULL, NULL FROM crm_profile p JOIN crm_tenant t ON t.id = p.tenant_id
     WHERE t.external_id = %(tenant)s AND %(phone)s <> '' AND p.phone = %(phone)s ORDER BY p.is_stub, p.id LIMIT 2)
) r LEFT JOIN crm_profile p ON p.id = r.profile_id
"""


def contact_resolve(*, tenant_external_id: str, contact_id: str, email: str, phone: str) -> Resolution:
    """Find what a contact event refers to, without writing, in one query. The caller holds `identity_lock`.

    A link to a real profile ends the search; a missing link or a link to a stub looks for another
    profile of the tenant by email, then phone. A link under another tenant raises `TenantMismatch`.
    """
    with prepared_cursor() as cursor:
        cursor.execute(
            _RESOLVE_SQL, {"tenant": tenant_external_id, "contact": contact_id, "email": email, "phone": phone}
        )
        rows = cursor.fetchall()
    tenant = None
    link = None
    found: dict[str, list[Profile]] = {"email": [], "phone": []}
    for role, link_id, tenant_id, external_id, *columns in rows:
        if role == "tenant":
            tenant = Tenant(pk=tenant_id, external_id=external_id)
            continue
        profile = Profile.from_db(connection.alias, _PROFILE_COLUMNS, columns)
        if role == "link":
            link = ContactLink(pk=link_id, tenant_id=tenant_id, profile=profile, messaging_contact_id=contact_id)
            link.tenant = Tenant(pk=tenant_id, external_id=external_id)
        else:
            found[role].append(profile)
    if link is not None and link.tenant.external_id != tenant_external_id:
        contact_link_check_tenant(link=link, tenant_external_id=tenant_external_id)
    current = link.profile if link is not None else None
    if current is not None and not current.is_stub:
        return Resolution(tenant=tenant, link=link, current=current, match=None, conflict=None)
    by_email, by_phone = (
        next((p for p in found[kind] if current is None or p.pk != current.pk), None) for kind in ("email", "phone")
    )
    conflict = None
    if by_email is not None and by_phone is not None and by_email.pk != by_phone.pk:
        conflict = {"email_profile_id": by_email.pk, "phone_profile_id": by_phone.pk, "chosen": "email"}
    return Resolution(tenant=tenant, link=link, current=current, match=by_email or by_phone, conflict=conflict)


def contact_link_create(*, tenant: Tenant, profile: Profile, contact_id: str) -> ContactLink:
    return ContactLink.objects.create(tenant=tenant, profile=profile, messaging_contact_id=contact_id)


def contact_resolve_or_create(
    *,
    tenant_external_id: str,
    contact_id: str,
    email: str,
    phone: str,
    stub: bool,
    prepare: Callable[[Profile], None] | None = None,
) -> tuple[Tenant, Profile, Resolved, Resolution]:
    """Resolve (see module doc) and link, creating the tenant (first sight) and a profile when nothing matches.

    `prepare` fills a new profile before it is inserted, so that its fields cost no second write.
    Returns the tenant, the profile, how it was found (`Resolved`) and the resolution.
    A link to a stub is left to the caller (a `contact.created` statement merges it; other events keep using the stub).
    """
    identity_lock(tenant_external_id=tenant_external_id, contact_id=contact_id, email=email, phone=phone)
    resolution = contact_resolve(tenant_external_id=tenant_external_id, contact_id=contact_id, email=email, phone=phone)
    tenant = resolution.tenant or tenant_get_or_create(tenant_external_id)
    if resolution.current is not None:
        return tenant, resolution.current, Resolved.EXISTING, resolution
    if resolution.match is not None:
        resolution.link = contact_link_create(tenant=tenant, profile=resolution.match, contact_id=contact_id)
        return tenant, resolution.match, Resolved.LINKED, resolution
    profile = Profile(tenant=tenant, is_stub=stub)
    if prepare is not None:
        prepare(profile)
    profile.save(force_insert=True)
    resolution.link = contact_link_create(tenant=tenant, profile=profile, contact_id=contact_id)
    return tenant, profile, Resolved.CREATED, resolution
