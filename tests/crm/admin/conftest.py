from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from crm.models import Profile, Tenant
from tests.crm.admin.factories import make_person, make_staff, make_tenant

# Strings that only tenant B's rows contain: none may ever reach tenant A's staff.
B_MARKERS = ("Bobbington", "bob.secret@", "contact-bbb", "Beta Corp", "beta-ext", "+27829990000")


@dataclass
class World:
    tenant_a: Tenant
    tenant_b: Tenant
    alice: Profile
    bob: Profile
    staff_a: object
    superuser: object


@pytest.fixture
def world(db) -> World:
    tenant_a = make_tenant("acme-ext", "Acme Ltd")
    tenant_b = make_tenant("beta-ext", "Beta Corp")
    alice = make_person(
        tenant_a,
        first="Alice",
        last="Anders",
        email="alice@acme.example",
        phone="+27821110000",
        contact_id="contact-aaa-1",
    )
    bob = make_person(
        tenant_b,
        first="Bob",
        last="Bobbington",
        email="bob.secret@b-corp.example",
        phone="+27829990000",
        contact_id="contact-bbb-9",
    )
    superuser = get_user_model().objects.create_superuser(username="root", password="pw", email="")
    return World(tenant_a, tenant_b, alice, bob, make_staff("staff-a", [tenant_a]), superuser)


@pytest.fixture
def client_a(world: World) -> Client:
    client = Client()
    client.force_login(world.staff_a)
    return client


@pytest.fixture
def client_root(world: World) -> Client:
    client = Client()
    client.force_login(world.superuser)
    return client


def assert_no_b_data(html: str) -> None:
    leaked = [marker for marker in B_MARKERS if marker in html]
    assert not leaked, f"tenant B data leaked: {leaked}"
