"""The back office. Every CRM model is registered here, scoped to the staff user's tenants (see
`crm.admin_scoping`), one module per job:

- `base`: the scoped base classes, shared filters and searches (the inbox admin uses them too);
- `html`: rendering that needs the admin (`when_column`, `changelist_link`); values are `crm.display`'s;
- `forms`, `inlines`, `views` (the hand-recorded consent page);
- the model admins by domain: `profiles`, `consent`, `records`, `segments`, `tenants`, `backfill`.

Event-derived records are read-only for staff; the consent ledger is append-only for everyone.
Writes that carry business rules (staff profile edits, hand-recorded consent, score refreshes)
go through the CRM services, never straight to the ORM.
"""

# Importing a module registers its admins; Django's autodiscovery imports this package.
from crm.admin import backfill, consent, profiles, records, segments, tenants

__all__ = ["backfill", "consent", "profiles", "records", "segments", "tenants"]
