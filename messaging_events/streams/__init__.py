"""Seeded streams of Messaging jobs, for the tests, the demo (`publish_demo_events`) and the bench.

- `events.py`: each event type's payload fields (`PAYLOAD_FIELDS`) and `job()`, which builds any of them in
  its envelope: the one place that knows each job's shape.
- `mixed.py`: the bench's streams (sign-ups with a campaign, a campaign to known contacts, floods), with
  their parameters: tenants, contacts, the message mix, the campaign, the seed.
- `demo.py`: the demo's stream (every type, duplicates, reorderings, malformed jobs).

Producer-side and pure: nothing here touches the database or Redis, so tests, the bench and the demo command
import it alike. It imports only the contract's event types (import contract `streams-pure`).
"""
