"""CRM business logic: services write (`<entity>_<action>`), selectors read.

Nothing here imports `messaging_events` (import contract `crm-independent` in pyproject.toml): handlers
translate events into plain values and call these. The one exception is the contacts backfill, which
validates its rows with the event contract's `ContactCreated` schema.
"""
