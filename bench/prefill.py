"""Grow the CRM and inbox tables to k times their data, fast, in SQL.

Every row of every table of the `crm` and `messaging_events` apps is copied `copies` times with
`INSERT … SELECT`: primary keys and foreign keys to copied tables are shifted by a per-table offset,
and the text columns of unique constraints that would otherwise collide get a `~k` suffix
(contact ids, idempotency keys, message ids). Tenants and segments are kept, so each tenant holds
k times the profiles, links, activities, consents, interactions and inbox rows. The copy reads the
schema from the models, so it follows the CRM tables as they change. Foreign keys are deferred
(Django creates them DEFERRABLE INITIALLY DEFERRED), so one transaction copies in any order.
"""

import logging

from django.apps import apps
from django.db import connection, models, transaction

logger = logging.getLogger(__name__)

APPS = ("crm", "messaging_events")
KEPT = {"crm.Tenant", "crm.Segment"}  # configuration-like rows: shared, not multiplied


def _label(model: type[models.Model] | str | None) -> str:
    # Also given relations' `related_model`, typed as possibly "self" or None: on a loaded relation it is a class.
    assert isinstance(model, type)
    return f"{model._meta.app_label}.{model.__name__}"


def _copied_models() -> list[type[models.Model]]:
    found = []
    for app in APPS:
        for model in apps.get_app_config(app).get_models(include_auto_created=True):
            meta = model._meta
            if meta.proxy or not meta.managed or _label(model) in KEPT:
                continue
            if meta.auto_created and any(
                f.related_model and _label(f.related_model) in KEPT for f in meta.local_fields if f.is_relation
            ):
                continue  # an M2M table of a kept model (tenant staff)
            found.append(model)
    return found


def _unique_sets(model: type[models.Model]) -> list[tuple[str, ...]]:
    meta = model._meta
    sets: list[tuple[str, ...]] = [(f.name,) for f in meta.local_fields if f.unique and not f.primary_key]
    sets += [tuple(names) for names in meta.unique_together]
    sets += [tuple(c.fields) for c in meta.constraints if isinstance(c, models.UniqueConstraint) and c.fields]
    return sets


def _pk_offsets(copied: list[type[models.Model]]) -> dict[str, int]:
    """Per model with an integer primary key: the shift that puts a copy's keys past the original rows'."""
    quote = connection.ops.quote_name
    offsets = {}
    with connection.cursor() as cursor:
        for model in copied:
            pk = model._meta.pk
            if pk.is_relation or not isinstance(pk, models.AutoField | models.BigAutoField | models.IntegerField):
                continue
            cursor.execute(f"SELECT COALESCE(MAX({quote(pk.column)}), 0) + 1 FROM {quote(model._meta.db_table)}")
            offsets[_label(model)] = cursor.fetchone()[0]
    return offsets


def _copy_plan(
    model: type[models.Model], offsets: dict[str, int], copied_labels: set[str]
) -> tuple[set[str], set[str]] | None:
    """The fields a copy shifts (keys) and suffixes (unique text), or None when its rows cannot stay unique."""
    meta = model._meta
    shifted = set()
    for field in meta.local_fields:
        if (field.primary_key and not field.is_relation and _label(model) in offsets) or (
            field.is_relation and field.related_model and _label(field.related_model) in copied_labels
        ):
            shifted.add(field.name)
    if meta.pk.name not in shifted:  # a primary key we cannot shift
        return None
    suffixed = set()
    for names in _unique_sets(model):
        if shifted & set(names):
            continue
        texts = {n: f for n in names if isinstance(f := meta.get_field(n), models.CharField | models.TextField)}
        if not texts:
            return None
        plain = [n for n, f in texts.items() if not f.choices]  # never suffix an enum column
        suffixed.add((plain or list(texts))[-1])
    return shifted, suffixed


def _copy_sql(model: type[models.Model], shifted: set[str], suffixed: set[str], offsets: dict[str, int]) -> str:
    """One statement: it reads the table as it was before, so each copy is of the original rows."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns, expressions = [], []
    for field in model._meta.local_fields:
        column = quote(field.column)
        columns.append(column)
        source = f"{table}.{column}"
        if field.name in shifted:
            target = _label(model) if not field.is_relation else _label(field.related_model)
            expressions.append(f"{source} + bench_copy.k * {offsets.get(target, 0)}")
        elif field.name in suffixed:
            expressions.append(f"{source} || '~' || bench_copy.k::text")
        elif field.name == "email" and isinstance(field, models.CharField):
            expressions.append(f"CASE WHEN {source} = '' THEN '' ELSE 'c' || bench_copy.k || '.' || {source} END")
        else:
            expressions.append(source)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(expressions)} "
        f"FROM {table} CROSS JOIN generate_series(1, %s) AS bench_copy(k)"
    )


def multiply(copies: int) -> dict[str, int]:
    """Adds `copies` shifted copies of every row. Returns the row count per table afterwards."""
    copied = _copied_models()
    copied_labels = {_label(m) for m in copied}
    quote = connection.ops.quote_name
    offsets = _pk_offsets(copied)
    skipped = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        for model in copied:
            plan = _copy_plan(model, offsets, copied_labels)
            if plan is None:
                skipped.append(model._meta.db_table)
                continue
            cursor.execute(_copy_sql(model, *plan, offsets), [copies])
        for model in copied:
            pk = model._meta.pk
            if _label(model) in offsets:
                table = model._meta.db_table
                cursor.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, %s), (SELECT COALESCE(MAX("
                    + quote(pk.column)
                    + "), 1) FROM "
                    + quote(table)
                    + "))",
                    [table, pk.column],
                )
    if skipped:
        logger.warning("prefill skipped tables (no way to keep them unique): %s", ", ".join(skipped))
    counts = {}
    with connection.cursor() as cursor:
        for model in copied:
            cursor.execute(f"SELECT count(*) FROM {quote(model._meta.db_table)}")
            counts[model._meta.db_table] = cursor.fetchone()[0]
    return counts


def vacuum_analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
