"""CRM business logic: services write (`<entity>_<action>`), selectors read.

Nothing here imports `messaging_events` (import contract `crm-independent` in pyproject.toml): handlers
translate events into plain values and call these, and the contacts backfill's rows arrive the same way,
as `ContactStatement`s parsed by `messaging_events.contact_export`.
"""
