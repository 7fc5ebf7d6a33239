"""Identity resolution, called directly: which profile a contactId resolves to, and what is linked or created.

The handler tests reach these rules through whole events; the mutation run (docs/testing.md, "Mutation
testing") showed what they leave unpinned: stubs ranked after real profiles, the linked stub never
matching itself, an empty email or phone matching nothing, the conflict's exact value, another tenant's
profiles never matching, the mismatch error, and the advisory locks' names."""

import pytest
from django.db import connections

from crm.errors import TenantMismatch
from crm.models import ContactLink, Profile, Tenant
from crm.services import identity
from crm.services.locks import _key

pytestmark = pytest.mark.django_db(transaction=False)


def _tenant(external_id: str = "t1") -> Tenant:
    return Tenant.objects.create(external_id=external_id)


def _profile(tenant: Tenant, *, email: str = "", phone: str = "", stub: bool = False) -> Profile:
    return Profile.objects.create(tenant=tenant, email=email, phone=phone, is_stub=stub)


def _resolve(contact_id: str = "c1", *, tenant: str = "t1", email: str = "", phone: str = "") -> identity.Resolution:
    return identity.contact_resolve(tenant_external_id=tenant, contact_id=contact_id, email=email, phone=phone)


def test_nothing_known_resolves_to_nothing() -> None:
    resolution = _resolve(email="a@example.com", phone="+27821234567")
    assert (resolution.tenant, resolution.link, resolution.current, resolution.match, resolution.conflict) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_a_real_profile_comes_before_a_stub_then_the_oldest() -> None:
    tenant = _tenant()
    stub = _profile(tenant, email="a@example.com", stub=True)
    oldest = _profile(tenant, email="a@example.com")
    _profile(tenant, email="a@example.com")
    resolution = _resolve(email="a@example.com")
    assert resolution.tenant == tenant and resolution.tenant.external_id == "t1"
    assert (resolution.link, resolution.current, resolution.match, resolution.conflict) == (None, None, oldest, None)
    assert stub.pk < oldest.pk  # the stub is older: it lost on being a stub, not on age


def test_the_phone_matches_when_the_email_does_not_and_empty_values_match_nothing() -> None:
    tenant = _tenant()
    _profile(tenant)  # neither email nor phone: an empty value in the event must not find it
    by_phone = _profile(tenant, phone="+27821234567")
    assert _resolve(email="", phone="").match is None
    assert _resolve(email="b@example.com", phone="+27821234567").match == by_phone
    assert _resolve(email="", phone="+27821234567").match == by_phone


def test_email_and_phone_on_two_profiles_choose_the_email_and_report_the_conflict() -> None:
    tenant = _tenant()
    by_email = _profile(tenant, email="a@example.com")
    by_phone = _profile(tenant, phone="+27821234567")
    resolution = _resolve(email="a@example.com", phone="+27821234567")
    assert resolution.match == by_email
    assert resolution.conflict == {"email_profile_id": by_email.pk, "phone_profile_id": by_phone.pk, "chosen": "email"}

    both = _profile(tenant, email="c@example.com", phone="+27829999999")
    same = _resolve(email="c@example.com", phone="+27829999999")
    assert (same.match, same.conflict) == (both, None)


def test_another_tenants_profiles_never_match() -> None:
    _profile(_tenant("t2"), email="a@example.com", phone="+27821234567")
    resolution = _resolve(email="a@example.com", phone="+27821234567")
    assert (resolution.tenant, resolution.match) == (None, None)


def test_a_link_to_a_real_profile_ends_the_search() -> None:
    tenant = _tenant()
    linked = _profile(tenant, email="old@example.com")
    ContactLink.objects.create(tenant=tenant, profile=linked, messaging_contact_id="c1")
    _profile(tenant, email="a@example.com")
    resolution = _resolve(email="a@example.com")
    assert resolution.link is not None and resolution.link.messaging_contact_id == "c1"
    assert (resolution.link.pk, resolution.link.tenant_id, resolution.link.tenant.external_id) == (
        ContactLink.objects.get().pk,
        tenant.pk,
        "t1",
    )
    assert (resolution.current, resolution.match, resolution.conflict) == (linked, None, None)
    assert resolution.current.email == "old@example.com"  # read whole, in the one query


def test_a_link_to_a_stub_looks_further_but_never_matches_the_stub_itself() -> None:
    tenant = _tenant()
    stub = _profile(tenant, email="a@example.com", stub=True)
    ContactLink.objects.create(tenant=tenant, profile=stub, messaging_contact_id="c1")
    assert (_resolve(email="a@example.com").current, _resolve(email="a@example.com").match) == (stub, None)

    real = _profile(tenant, email="a@example.com")
    resolution = _resolve(email="a@example.com")
    assert (resolution.current, resolution.match) == (stub, real)


def test_a_link_under_another_tenant_is_refused() -> None:
    other = _tenant("t2")
    ContactLink.objects.create(tenant=other, profile=_profile(other), messaging_contact_id="c1")
    with pytest.raises(TenantMismatch) as refused:
        _resolve(tenant="t1")
    assert refused.value.message == "contact c1 belongs to another tenant than 't1'"
    assert refused.value.extra == {"contact_id": "c1"}
    # An event that names no tenant is not refused.
    link = ContactLink.objects.select_related("tenant").get()
    identity.contact_link_check_tenant(link=link, tenant_external_id="")
    identity.contact_link_check_tenant(link=link, tenant_external_id="t2")


def test_resolve_or_create_says_how_it_found_the_profile() -> None:
    prepared: list[Profile] = []

    def prepare(profile: Profile) -> None:
        assert profile.pk is None  # before the insert
        profile.first_name = "Jane"
        prepared.append(profile)

    tenant, created, how, resolution = identity.contact_resolve_or_create(
        tenant_external_id="t1", contact_id="c1", email="a@example.com", phone="", stub=True, prepare=prepare
    )
    assert how == identity.Resolved.CREATED == "created"
    assert tenant == Tenant.objects.get(external_id="t1")
    assert prepared == [created]
    stored = Profile.objects.get(pk=created.pk)
    assert (stored.is_stub, stored.first_name, stored.tenant_id) == (True, "Jane", tenant.pk)
    assert resolution.link == ContactLink.objects.get(messaging_contact_id="c1")
    assert resolution.link.profile_id == created.pk

    _, found, how, _ = identity.contact_resolve_or_create(
        tenant_external_id="t1", contact_id="c1", email="", phone="", stub=False
    )
    assert (how, found) == (identity.Resolved.EXISTING, created)
    assert how == "existing"

    real = _profile(tenant, phone="+27821234567")
    _, linked, how, resolution = identity.contact_resolve_or_create(
        tenant_external_id="t1", contact_id="c2", email="", phone="+27821234567", stub=False
    )
    assert (how, linked) == (identity.Resolved.LINKED, real)
    assert how == "linked"
    assert resolution.link == ContactLink.objects.get(messaging_contact_id="c2")
    assert (resolution.link.profile_id, resolution.link.tenant_id) == (real.pk, tenant.pk)

    _, new, how, _ = identity.contact_resolve_or_create(
        tenant_external_id="t1", contact_id="c3", email="", phone="", stub=False
    )
    assert (how, Profile.objects.get(pk=new.pk).is_stub) == (identity.Resolved.CREATED, False)
    assert Profile.objects.count() == 3
    # Each call took the identity lock, named by the tenant, until the transaction ends.
    assert _held_elsewhere("email:t1:a@example.com") and _held_elsewhere("phone:t1:+27821234567")


def _held_elsewhere(name: str) -> bool:
    """Whether another session fails to take this advisory lock now."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_key(name)])
            taken = cursor.fetchone()[0]
            if taken:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_key(name)])
        return not taken
    finally:
        other.close()


def test_the_identity_lock_holds_the_contact_its_email_and_its_phone_by_tenant() -> None:
    identity.identity_lock(tenant_external_id="t1", contact_id="c1", email="a@example.com", phone="+27821234567")
    for name in ("contact:c1", "email:t1:a@example.com", "phone:t1:+27821234567"):
        assert _held_elsewhere(name), name
    assert not _held_elsewhere("email:t2:a@example.com")

    # An empty email or phone is not locked (every contact without one would wait on the others).
    identity.identity_lock(tenant_external_id="t1", contact_id="c2", email="", phone="")
    assert _held_elsewhere("contact:c2")
    assert not _held_elsewhere("email:t1:") and not _held_elsewhere("phone:t1:")
