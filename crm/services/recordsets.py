"""Many rows as one statement parameter: a JSON array that SQL reads with `jsonb_to_recordset`.

Django's psycopg cursor binds parameters on the client, and quoting a text array costs a regular
expression per element; one JSON document is quoted once. That made it the cheaper way to send a
batch's rows (measured: the array parameters were a third of the set-based path's time). One parameter
also keeps a statement's text the same whatever the batch size, so that it is prepared once per
connection (crm/services/prepared.py).
"""

import json
from datetime import datetime
from typing import Any


def _default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def recordset_json(rows: list[dict[str, Any]]) -> str:
    """The rows as a JSON array (datetimes in ISO 8601, which timestamptz columns read back exactly)."""
    return json.dumps(rows, default=_default, separators=(",", ":"))
