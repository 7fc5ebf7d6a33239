"""backfill_contacts: here, beside the contract, because the export's rows are the contract's
(messaging_events.contact_export reads them); the CRM applies them (crm.services.backfill)."""

from datetime import UTC, datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from crm.services.backfill import BackfillFileError, BackfillResult
from crm.services.backfill_pipeline import ValidationProcessError
from messaging_events.contact_export import contacts_backfill, count_rows, detect_format
from messaging_events.contract.fields import check_timestamp_range


def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--as-of {value!r} is not an ISO 8601 timestamp") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        return check_timestamp_range(parsed.astimezone(UTC))
    except ValueError as exc:
        raise CommandError(f"--as-of {exc}") from None


class Command(BaseCommand):
    help = (
        "Import a Messaging contact export (CSV or JSON lines with the contact.created fields) with the effect of "
        "live contact.created events, in bulk (--row-by-row: through the live service itself). Idempotent: a "
        "second run changes nothing; --resume continues an interrupted run. When a row happened (consent "
        "last-writer-wins) is its updatedAt/createdAt column, else --as-of, else the file's modification time."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--tenant", help="tenantId for every row (supplies it, or overrides the file's).")
        parser.add_argument("--format", choices=("csv", "jsonl"), help="Default: from the extension.")
        parser.add_argument(
            "--as-of",
            help="When rows without updatedAt/createdAt happened (ISO 8601; default: the file's mtime). "
            "Use the export's time: a statement older than a live decision never overrides it.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Run everything in a transaction, roll it back.")
        parser.add_argument(
            "--row-by-row",
            action="store_true",
            help="Apply every row through the live contact_statement_apply service (the reference path; slow).",
        )
        parser.add_argument(
            "--chunk-size",
            type=int,
            help="Rows read and committed together (default 2500; 500 with --row-by-row).",
        )
        parser.add_argument(
            "--resume",
            action="store_true",
            help="Continue after the last chunk an interrupted run of the same file committed.",
        )
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options) -> None:
        path: Path = options["path"]
        as_of = _as_of(options["as_of"])  # parsed here, not by argparse: a CommandError, not a traceback
        if path.is_dir():
            raise CommandError(f"{path}: is a directory; give the export file")
        if not path.exists():
            raise CommandError(f"{path}: no such file")
        try:
            fmt = detect_format(path, options["format"])
            total = None if options["no_progress"] else count_rows(path, fmt)
        except BackfillFileError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"{path}: cannot read it ({exc.strerror})") from None
        if options["chunk_size"] is not None and options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1")
        if options["resume"] and options["dry_run"]:
            raise CommandError("--resume and --dry-run do not go together (a dry run keeps no checkpoint)")
        bar: tqdm | None = None  # made at the first chunk: a file refused whole prints no progress bar
        last_rows = 0

        def on_progress(result: BackfillResult) -> None:
            nonlocal last_rows, bar
            if bar is None:
                bar = tqdm(
                    total=None if total is None else max(0, total - result.resumed_after_line),
                    unit="row",
                    desc="backfill",
                    disable=options["no_progress"],
                    mininterval=0.5,
                )
            bar.update(result.rows - last_rows)  # tqdm shows rows/s and the ETA from these updates
            last_rows = result.rows
            # Counts only: never a row's content (personal data).
            bar.set_postfix(changed=f"{result.changed:,}", rejected=f"{result.counts['rejected']:,}", refresh=False)

        try:
            result = contacts_backfill(
                path=path,
                fmt=fmt,
                tenant=options["tenant"],
                as_of=as_of,
                dry_run=options["dry_run"],
                row_by_row=options["row_by_row"],
                chunk_rows=options["chunk_size"],
                resume=options["resume"],
                on_progress=on_progress,
            )
        except BackfillFileError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"{path}: cannot read it ({exc.strerror})") from None
        except ValidationProcessError as exc:
            raise CommandError(f"{exc}; the chunks committed so far are kept; continue with --resume") from None
        except KeyboardInterrupt:
            raise CommandError("interrupted: the chunks committed so far are kept; continue with --resume") from None
        finally:
            if bar is not None:
                bar.close()
        self._summary(path, fmt, result)

    def _summary(self, path: Path, fmt: str, result: BackfillResult) -> None:
        write = self.stdout.write
        title = "DRY RUN (rolled back, nothing written): " if result.dry_run else ""
        write(f"{title}{path.name} ({fmt}): {result.rows} rows in {result.seconds:.1f} s")
        if result.resumed_after_line:
            write(f"  resumed after line {result.resumed_after_line} (committed by an earlier run)")
        verbs = ("would be " if result.dry_run else "") + "{}"
        for name in ("created", "linked", "updated", "unchanged", "rejected"):
            write(f"  {verbs.format(name):<22}{result.counts[name]:>8}")
        if result.ignored_columns:
            write(f"  ignored columns: {', '.join(result.ignored_columns)}")
        if result.rejections:
            write("rejected rows:")
            for rejection in result.rejections:
                write(f"  line {rejection.line}: {rejection.reason}")
            unlisted = result.counts["rejected"] - len(result.rejections)
            if unlisted:
                write(f"  ... and {unlisted} more rejected rows not listed")
