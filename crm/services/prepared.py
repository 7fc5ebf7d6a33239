"""A cursor for the worker's large, repeated statements: parameters bound on the server, so that psycopg
prepares a statement at its sixth execution on the connection (the settings' `prepare_threshold`) and
PostgreSQL parses and plans it once per connection instead of at every execution (docs/decisions.md,
"Prepared statements for the worker's large statements").

Django's own cursor keeps its default, client-side binding: server-side binding refuses some statements
that Django and the tests run (several commands in one execute with parameters; a parameter in both SELECT
and GROUP BY, Django ticket #34255). So a statement run here is one command whose parameters PostgreSQL
can type from their context. The cursor is Django's wrapper, so query counting and execute wrappers see it.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connection
from django.db.backends.postgresql.base import CursorDebugWrapper
from django.db.backends.utils import CursorWrapper


@contextmanager
def prepared_cursor() -> Iterator[CursorWrapper]:
    """A Django cursor on the current connection (same transaction) that binds its parameters on the server."""
    connection.close_if_health_check_failed()  # as `connection.cursor()` does first
    connection.ensure_connection()
    wrapper = CursorDebugWrapper if connection.queries_logged else CursorWrapper  # as `connection.cursor()` picks
    with wrapper(psycopg.Cursor(connection.connection), connection) as cursor:
        yield cursor
