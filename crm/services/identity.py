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

from dataclasses import dataclass

from crm.errors import TenantMismatch
from crm.models import ContactLink, Profile, Tenant
from crm.services.locks import advisory_locks_acquire, contact_lock_name


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


def identity_lock(*, tenant: Tenant, contact_id: str, email: str, phone: str) -> None:
    """Serialise identity resolution for this contactId, email and phone (across workers)."""
    advisory_locks_acquire(
        contact_lock_name(contact_id),
        f"email:{tenant.pk}:{email}" if email else "",
        f"phone:{tenant.pk}:{phone}" if phone else "",
    )


@dataclass
class Resolution:
    link: ContactLink | None  # None when the contact has no link yet
    current: Profile | None  # the linked profile
    match: Profile | None  # another profile found by email, else phone
    conflict: dict | None


def contact_resolve(*, tenant: Tenant, contact_id: str, email: str, phone: str) -> Resolution:
    """Find what a contact event refers to, without writing. The caller holds `identity_lock`.

    A link to a real profile ends the search; a missing link or a link to a stub looks for another
    profile of the tenant by email, then phone.
    """
    link = contact_link_get(contact_id=contact_id)
    if link is not None and link.tenant_id != tenant.pk:
        contact_link_check_tenant(link=link, tenant_external_id=tenant.external_id)
    current = link.profile if link is not None else None
    if current is not None and not current.is_stub:
        return Resolution(link=link, current=current, match=None, conflict=None)
    candidates = Profile.objects.filter(tenant=tenant).order_by("is_stub", "pk")
    if current is not None:
        candidates = candidates.exclude(pk=current.pk)
    by_email = candidates.filter(email=email).first() if email else None
    by_phone = candidates.filter(phone=phone).first() if phone else None
    conflict = None
    if by_email is not None and by_phone is not None and by_email.pk != by_phone.pk:
        conflict = {"email_profile_id": by_email.pk, "phone_profile_id": by_phone.pk, "chosen": "email"}
    return Resolution(link=link, current=current, match=by_email or by_phone, conflict=conflict)


def contact_link_create(*, tenant: Tenant, profile: Profile, contact_id: str) -> ContactLink:
    return ContactLink.objects.create(tenant=tenant, profile=profile, messaging_contact_id=contact_id)


def profile_create(*, tenant: Tenant, is_stub: bool) -> Profile:
    return Profile.objects.create(tenant=tenant, is_stub=is_stub)


def contact_resolve_or_create(
    *, tenant: Tenant, contact_id: str, email: str, phone: str, stub: bool
) -> tuple[Profile, str, Resolution]:
    """Resolve (see module doc) and link, creating a profile when nothing matches.

    Returns the profile, what happened ("existing", "linked", "created") and the resolution. A link
    to a stub is left to the caller (`contact_import` merges it; other events keep using the stub).
    """
    identity_lock(tenant=tenant, contact_id=contact_id, email=email, phone=phone)
    resolution = contact_resolve(tenant=tenant, contact_id=contact_id, email=email, phone=phone)
    if resolution.current is not None:
        return resolution.current, "existing", resolution
    if resolution.match is not None:
        resolution.link = contact_link_create(tenant=tenant, profile=resolution.match, contact_id=contact_id)
        return resolution.match, "linked", resolution
    profile = profile_create(tenant=tenant, is_stub=stub)
    resolution.link = contact_link_create(tenant=tenant, profile=profile, contact_id=contact_id)
    return profile, "created", resolution
