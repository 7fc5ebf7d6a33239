"""Transaction-scoped advisory locks: serialise work on one contact id, email or phone across workers."""

import hashlib
from collections.abc import Iterable

from django.db import connection

from crm.models import Profile


def _key(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def advisory_locks_acquire(*names: str, shared: Iterable[str] = ()) -> None:
    """Take `pg_advisory_xact_lock` on each name (and `pg_advisory_xact_lock_shared` on each `shared` name
    that is not also among `names`), all in one fixed order of keys (no deadlock among them).

    Released when the outermost transaction ends.
    """
    exclusive = {_key(name) for name in names if name}
    modes = {key: "pg_advisory_xact_lock_shared" for key in map(_key, filter(None, shared))}
    modes.update(dict.fromkeys(exclusive, "pg_advisory_xact_lock"))
    if not modes:
        return
    keys = sorted(modes)
    sql = "SELECT " + ", ".join(f"{modes[key]}(%s)" for key in keys)
    with connection.cursor() as cursor:
        cursor.execute(sql, keys)


def contact_lock_name(contact_id: str) -> str:
    """The advisory lock `identity.identity_lock` holds exclusively while it links this contact id."""
    return f"contact:{contact_id}"


def contact_identities_wait(contact_ids: Iterable[str]) -> None:
    """Before parking events of contacts that have no link: wait for any identity resolution of these
    contacts in flight to commit, and keep it waiting until this transaction ends (a shared lock on
    `contact_lock_name`). Otherwise an event could be parked just after the `contact.created` that
    links its contact looked for parked events to re-apply, and wait for the periodic sweep."""
    advisory_locks_acquire(shared=[contact_lock_name(contact_id) for contact_id in contact_ids])


def profile_lock(profile_id: int) -> None:
    """Lock one profile row for the rest of the transaction.

    Every writer that reads-then-writes a profile's consent, provenance or segments takes this first,
    so they are serialised per profile and always lock the profile before its dependent rows.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM crm_profile WHERE id = %s FOR NO KEY UPDATE", [profile_id])


def profile_lock_get(profile_id: int) -> Profile:
    """`profile_lock` and a fresh read of the profile, in one statement."""
    return Profile.objects.select_for_update(no_key=True).get(pk=profile_id)


def profiles_lock(profile_ids: list[int]) -> None:
    """`profile_lock` for many profiles in one statement, in id order (so two batches cannot deadlock on them)."""
    if not profile_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM crm_profile WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE", [sorted(set(profile_ids))]
        )
