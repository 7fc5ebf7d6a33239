"""The worker's large statements are prepared on its connection (docs/decisions.md, "Prepared statements for
the worker's large statements"): from its sixth execution on a connection (psycopg's `prepare_threshold` of
5), a statement is parsed and planned once, not at every execution."""

import pytest
from django.db import connection

from messaging_events.services import batch_apply
from tests.factories import contact_created_job

pytestmark = pytest.mark.django_db(transaction=True)


def _sign_up(n: int) -> None:
    job = contact_created_job(
        contact_id=f"c-{n}", event_id=f"e-{n}", email=f"p{n}@example.com", phone=f"+2782000000{n}", email_opt_in=True
    )
    assert batch_apply.apply_batch([job]).statuses == {"applied": 1}


def _prepared_consent_statements() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%INSERT INTO crm_consentchange%"]
        )
        return cursor.fetchone()[0]


def test_the_consent_statement_is_prepared_at_its_sixth_execution_on_a_connection() -> None:
    for n in range(5):
        _sign_up(n)
    assert _prepared_consent_statements() == 0
    _sign_up(5)
    assert _prepared_consent_statements() == 1
