"""Tenant staff access: a user, the tenants they are staff of, and one role group.

The admin scopes every row to the user's tenants (`crm.admin_scoping`); the role decides what
they may do there. Groups are per user, not per tenant: someone who is an editor is an editor
in every tenant they belong to.
"""

from dataclasses import dataclass
from enum import StrEnum

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from crm.errors import ApplicationError
from crm.models import Tenant


class Role(StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"


# Created by the migration crm/0003_crm_role_groups with exactly each role's permissions.
ROLE_GROUPS: dict[Role, str] = {Role.VIEWER: "CRM viewer", Role.EDITOR: "CRM editor"}


@dataclass(frozen=True)
class AccessChange:
    username: str
    tenant: str
    created_user: bool
    role: Role | None  # None once the user is staff of no tenant
    tenants: tuple[str, ...]


def _tenant(external_id: str) -> Tenant:
    tenant = Tenant.objects.filter(external_id=external_id).first()
    if tenant is None:
        raise ApplicationError(
            f"no tenant with id {external_id!r} (tenants appear with their first event; "
            "the tenant admin list shows their ids)"
        )
    return tenant


def _role_groups() -> dict[Role, Group]:
    groups = {group.name: group for group in Group.objects.filter(name__in=ROLE_GROUPS.values())}
    missing = [name for name in ROLE_GROUPS.values() if name not in groups]
    if missing:
        raise ApplicationError(f"group {missing[0]!r} does not exist; run `manage.py migrate` first")
    return {role: groups[name] for role, name in ROLE_GROUPS.items()}


def _tenant_ids_of(user) -> tuple[str, ...]:
    return tuple(Tenant.objects.filter(staff=user).order_by("external_id").values_list("external_id", flat=True))


@transaction.atomic
def tenant_access_grant(*, username: str, tenant_external_id: str, role: Role, create: bool = False) -> AccessChange:
    """Make `username` staff of the tenant with `role`. Creates the user (no usable password) if `create`."""
    tenant = _tenant(tenant_external_id)
    groups = _role_groups()
    user_model = get_user_model()
    user = user_model._default_manager.filter(username=username).first()
    created = False
    if user is None:
        if not create:
            raise ApplicationError(f"no user {username!r}; pass --create to create it")
        user = user_model._default_manager.create_user(username=username, password=None)
        created = True
    if user.is_superuser:
        raise ApplicationError(f"{username!r} is a superuser and already sees every tenant")
    if not user.is_staff or not user.is_active:
        user.is_staff = True
        user.is_active = True
        user.save(update_fields=["is_staff", "is_active"])
    tenant.staff.add(user)
    user.groups.remove(*groups.values())
    user.groups.add(groups[role])
    return AccessChange(username, tenant.external_id, created, role, _tenant_ids_of(user))


@transaction.atomic
def tenant_access_revoke(*, username: str, tenant_external_id: str) -> AccessChange:
    """Remove `username` from the tenant's staff; with no tenant left, also from the role groups and the admin."""
    tenant = _tenant(tenant_external_id)
    user = get_user_model()._default_manager.filter(username=username).first()
    if user is None:
        raise ApplicationError(f"no user {username!r}")
    tenant.staff.remove(user)
    tenants = _tenant_ids_of(user)
    role = None
    if tenants:
        names = set(user.groups.values_list("name", flat=True))
        role = next((r for r, name in ROLE_GROUPS.items() if name in names), None)
    else:
        user.groups.remove(*Group.objects.filter(name__in=ROLE_GROUPS.values()))
        if not user.is_superuser:
            user.is_staff = False
            user.save(update_fields=["is_staff"])
    return AccessChange(username, tenant.external_id, False, role, tenants)
