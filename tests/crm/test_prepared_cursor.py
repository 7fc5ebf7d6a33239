"""`prepared_cursor`'s prepare choice: at once, never, or at the settings' threshold; and never with
prepared statements off in the settings."""

import pytest
from django.db import connection

from crm.services.prepared import prepared_cursor


def _probe(tag: str) -> str:
    """A statement text of this test's own: psycopg counts executions, and PostgreSQL keeps prepared
    statements, per text and connection."""
    return f"SELECT count(*) FROM crm_tenant WHERE external_id = ANY(%s) /* {tag} */"


def _prepared(tag: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE strpos(statement, %s) > 0", [f"/* {tag} */"])
        return cursor.fetchone()[0]


def _run(tag: str, times: int, **choice: bool) -> None:
    for _ in range(times):
        with prepared_cursor(**choice) as cursor:
            cursor.execute(_probe(tag), [["a", "b"]])
            assert cursor.fetchone() == (0,)


@pytest.fixture
def psycopg_connection():
    connection.ensure_connection()
    threshold = connection.connection.prepare_threshold
    yield connection.connection
    connection.connection.prepare_threshold = threshold


@pytest.mark.django_db
def test_prepare_true_prepares_at_the_first_execution(psycopg_connection) -> None:
    _run("at-once", 1, prepare=True)
    assert _prepared("at-once") == 1


@pytest.mark.django_db
def test_prepare_false_never_prepares(psycopg_connection) -> None:
    _run("never", 8, prepare=False)
    assert _prepared("never") == 0


@pytest.mark.django_db
def test_by_default_a_statement_is_prepared_at_the_settings_threshold(psycopg_connection) -> None:
    assert psycopg_connection.prepare_threshold == 5
    _run("threshold", 5)
    assert _prepared("threshold") == 0
    _run("threshold", 1)
    assert _prepared("threshold") == 1


@pytest.mark.django_db
def test_with_prepared_statements_off_nothing_is_prepared(psycopg_connection) -> None:
    psycopg_connection.prepare_threshold = None  # DJANGO_DB_PREPARED_STATEMENTS=false
    _run("off", 3, prepare=True)
    assert _prepared("off") == 0
