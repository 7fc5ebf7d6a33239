"""A cursor for large, repeated statements: parameters bound on the server, so that PostgreSQL can
parse and plan a statement once per connection instead of at every execution (docs/decisions.md,
"Prepared statements for the worker's large statements" and "Backfill CPU per row").

When a statement is prepared is the caller's choice (`prepare`): by default psycopg prepares it at its
sixth execution on the connection (the settings' `prepare_threshold`); `prepare=True` prepares it at
its first; `prepare=False` never does, so PostgreSQL plans it for its values at every execution. With
prepared statements off in the settings (`DJANGO_DB_PREPARED_STATEMENTS=false`, for a pooler that cannot
keep them) nothing is prepared, whatever the caller chose.

Django's own cursor keeps its default, client-side binding: server-side binding refuses some statements
that Django and the tests run (several commands in one execute with parameters; a parameter in both SELECT
and GROUP BY, Django ticket #34255). So a statement run here is one command whose parameters PostgreSQL
can type from their context. The cursor is Django's wrapper, so query counting, execute wrappers and
Django's database errors (`DatabaseError`, with the driver's error as its cause) see it.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection
from django.db.backends.postgresql.base import CursorDebugWrapper
from django.db.backends.utils import CursorWrapper


class _ServerBindingCursor(psycopg.Cursor):
    """psycopg's cursor with one prepare choice for every statement it executes."""

    def __init__(self, conn: psycopg.Connection, *, prepare: bool | None) -> None:
        super().__init__(conn)
        self._prepare_choice = prepare

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        return super().execute(
            query, params, prepare=self._prepare_choice if prepare is None else prepare, binary=binary
        )


@contextmanager
def prepared_cursor(*, prepare: bool | None = None) -> Iterator[CursorWrapper]:
    """A Django cursor on the current connection (same transaction) that binds its parameters on the
    server and prepares its statements as `prepare` says (module doc)."""
    connection.close_if_health_check_failed()  # as `connection.cursor()` does first
    connection.ensure_connection()
    if connection.connection.prepare_threshold is None:  # prepared statements are off (module doc)
        prepare = False
    wrapper = CursorDebugWrapper if connection.queries_logged else CursorWrapper  # as `connection.cursor()` picks
    with wrapper(_ServerBindingCursor(connection.connection, prepare=prepare), connection) as cursor:
        yield cursor
