"""Partial acceptance: the inbox records the optional values an event's contract dropped.

The column has a constant database default, so adding it does not rewrite the table (PostgreSQL 11+);
the partial index is built concurrently, so a large inbox keeps taking events while it builds.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("messaging_events", "0002_inbox_typed_identity_and_conflicts"),
    ]

    operations = [
        migrations.AddField(
            model_name="inboundevent",
            name="warnings",
            field=models.JSONField(
                blank=True,
                db_default=models.Value([], output_field=models.JSONField()),
                default=list,
                help_text="Optional values dropped or reinterpreted: [{field, problem, value}].",
            ),
        ),
        AddIndexConcurrently(
            model_name="inboundevent",
            index=models.Index(
                condition=models.Q(("warnings", []), _negated=True), fields=["status"], name="inbound_with_warnings"
            ),
        ),
    ]
