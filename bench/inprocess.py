"""The worker's two paths, in-process, on the same kind of events: milliseconds per event.

A campaign (`messaging_events.streams.mixed.campaign`: sent, delivered, opens, clicks, a few bounces and
failures) to contacts that already exist is applied in batches, once through the per-event path
(`inbox.process_batch`) and once through the set-based path (`batch_apply.apply_batch`), repeatedly,
alternating which goes first. Each run is a new campaign (new message ids) to the same contacts, with
real commits. Both paths share the machine's noise, so their ratio holds on a loaded machine even
when the absolute figures do not.

    DATABASE_URL=… python -m bench.inprocess --contacts 300 --batch 32 --repeats 3

With `--preferences N`, it times `contactPreference.updated` for N contacts that exist, one per batch.

With `--signups N`, it times the stream's `contact.created` events instead (new contacts, most with
email and SMS opt-in flags, `messaging_events.streams.mixed.generate`): N per run per event
(`inbox.process_batch`) and N through `batch_apply.apply_batch`, which applies them set-based
(docs/performance.md, "Set-based sign-ups").

With `--unpark N`, it times re-applying N parked events of a campaign (messages that overtook their contacts'
sign-ups) once their contacts are linked: one by one, as `parking.unpark_contacts` did before, and through
`parking.unpark_contacts` (the message events set-based, in chunks).
"""

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable

from bench import stream
from messaging_events.streams.events import StreamJob

TENANTS = 4


def _bridged(jobs: list[StreamJob], tag: str) -> list[dict]:
    """As the bridge hands jobs to the workers."""
    now_ms = int(time.time() * 1000)
    return [{"id": f"{tag}-{n}", "timestamp": now_ms, "attemptsMade": 0, **job} for n, job in enumerate(jobs)]


def _apply(jobs: list[dict], batch: int, apply: Callable) -> float:
    """Seconds to apply the jobs in batches of `batch`."""
    started = time.perf_counter()
    for start in range(0, len(jobs), batch):
        apply(jobs[start : start + batch])
    return time.perf_counter() - started


def _runs(runs: dict[str, list[float]], fallbacks: int) -> dict:
    """Each path's runs in ms/event, and the set-based batches that fell back since there were `fallbacks`."""
    from messaging_events.services import batch_apply

    return {
        "runs_ms_per_event": {name: [round(v, 3) for v in values] for name, values in runs.items()},
        "fallback_batches": batch_apply.fallback_batches() - fallbacks,
    }


def compare(*, contacts: int = 300, batch: int = 32, repeats: int = 3, tag: str = "inproc") -> dict:
    """Median ms/event of each path over `repeats` campaigns, and the speed-up of the set-based path."""
    from messaging_events.services import batch_apply, inbox

    people = stream.contacts_of(contacts, TENANTS, tag)
    signups = [job for job in stream.generate(contacts, TENANTS, tag) if job["name"] == "contact.created"]
    _apply(_bridged(signups, f"{tag}-signup"), batch, inbox.process_batch)
    paths: dict[str, Callable] = {"per_event": inbox.process_batch, "set_based": batch_apply.apply_batch}
    ms_per_event: dict[str, list[float]] = {name: [] for name in paths}
    fallbacks = batch_apply.fallback_batches()
    events = 0
    for repeat in range(repeats):
        order = list(paths) if repeat % 2 == 0 else list(reversed(paths))
        for name in order:
            jobs = _bridged(stream.campaign(people, f"{tag}-{name}-{repeat}"), f"{tag}-{name}-{repeat}")
            events = len(jobs)
            ms_per_event[name].append(_apply(jobs, batch, paths[name]) * 1000 / len(jobs))
    per_event, set_based = (statistics.median(ms_per_event[name]) for name in paths)
    return {
        "events_per_run": events,
        "batch_size": batch,
        "repeats": repeats,
        "per_event_ms_per_event": round(per_event, 3),
        "set_based_ms_per_event": round(set_based, 3),
        "set_based_speedup": round(per_event / set_based, 2),
        **_runs(ms_per_event, fallbacks),
    }


def signups(*, count: int = 2000, batch: int = 32, repeats: int = 3, tag: str = "signups") -> dict:
    """Median ms/event of applying `count` new contacts' `contact.created` in batches, per event
    (`inbox.process_batch`, what `apply_batch` did before sign-ups were set-based) and through the worker's
    batch path (`batch_apply.apply_batch`: set-based), alternating which goes first; new contacts each run."""
    from messaging_events.services import batch_apply, inbox

    paths: dict[str, Callable] = {"per_event": inbox.process_batch, "batched": batch_apply.apply_batch}
    runs: dict[str, list[float]] = {name: [] for name in paths}
    fallbacks = batch_apply.fallback_batches()
    for repeat in range(repeats):
        for name in paths if repeat % 2 == 0 else reversed(paths):
            run_tag = f"{tag}-{name}-{repeat}"
            jobs = [job for job in stream.generate(count, TENANTS, run_tag) if job["name"] == "contact.created"]
            runs[name].append(_apply(_bridged(jobs, run_tag), batch, paths[name]) * 1000 / len(jobs))
    per_event, batched = (statistics.median(runs[name]) for name in paths)
    return {
        "signups_per_run": count,
        "batch_size": batch,
        "repeats": repeats,
        "signup_ms_per_event": round(per_event, 3),
        "signup_batched_ms_per_event": round(batched, 3),
        "signup_batched_speedup": round(per_event / batched, 2),
        **_runs(runs, fallbacks),
    }


def preferences(*, count: int = 300, repeats: int = 3, tag: str = "preferences") -> dict:
    """Median ms/event of `contactPreference.updated` for `count` contacts that exist, one event per batch
    (as high-priority events arrive, one at a time) through the worker's batch path."""
    from messaging_events.services import batch_apply, inbox

    runs = []
    for repeat in range(repeats):
        run_tag = f"{tag}-{repeat}"
        people = stream.contacts_of(count, TENANTS, run_tag)
        signups = [job for job in stream.generate(count, TENANTS, run_tag) if job["name"] == "contact.created"]
        _apply(_bridged(signups, f"{run_tag}-signup"), 32, inbox.process_batch)
        changes = _bridged(list(stream.preference_changes(people, count, run_tag)), f"{run_tag}-preference")
        runs.append(_apply(changes, 1, batch_apply.apply_batch) * 1000 / len(changes))
    return {
        "preferences_per_run": count,
        "repeats": repeats,
        "preference_ms_per_event": round(statistics.median(runs), 3),
        "runs_ms_per_event": [round(v, 3) for v in runs],
    }


def unpark_one_by_one(contact_ids: list[str]) -> int:
    """The per-event replay `parking.unpark_contacts` ran before its message events were set-based: every
    parked row alone, oldest first (the bench's and `test_unpark_set_based`'s reference)."""
    from messaging_events.models import InboundEvent
    from messaging_events.services import inbox

    rows = InboundEvent.objects.filter(status="parked", messaging_contact_id__in=contact_ids).order_by(
        "occurred_at", "id"
    )
    for row in rows:
        inbox.process_job(inbox.job_from_row(row), replay=True)
    return len(rows)


def unpark(*, count: int = 1000, repeats: int = 3, tag: str = "unpark") -> dict:
    """Median ms/event of re-applying `count` parked campaign events (a few bounces and failures among them)
    after their contacts signed up, one by one and through `parking.unpark_contacts`, alternating which goes
    first; new contacts each run. Parking and the sign-ups are not timed."""
    from messaging_events.services import batch_apply, parking

    paths: dict[str, Callable[[list[str]], int]] = {
        "per_event": unpark_one_by_one,
        "set_based": parking.unpark_contacts,
    }
    runs: dict[str, list[float]] = {name: [] for name in paths}
    fallbacks = batch_apply.fallback_batches()
    for repeat in range(repeats):
        for name in paths if repeat % 2 == 0 else reversed(paths):
            run_tag = f"{tag}-{name}-{repeat}"
            people = stream.contacts_of(count, TENANTS, run_tag)
            _apply(_bridged(stream.campaign(people, run_tag)[:count], run_tag), 32, batch_apply.apply_batch)
            signups = [job for job in stream.generate(count, TENANTS, run_tag) if job["name"] == "contact.created"]
            _apply(_bridged(signups, f"{run_tag}-signup"), 32, batch_apply.apply_batch)
            started = time.perf_counter()
            unparked = paths[name]([person.contact_id for person in people])
            runs[name].append((time.perf_counter() - started) * 1000 / unparked)
    per_event, set_based = (statistics.median(runs[name]) for name in paths)
    return {
        "parked_per_run": count,
        "repeats": repeats,
        "unpark_per_event_ms_per_event": round(per_event, 3),
        "unpark_ms_per_event": round(set_based, 3),
        "unpark_speedup": round(per_event / set_based, 2),
        **_runs(runs, fallbacks),
    }


def main() -> None:
    import django

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--signups", type=int, default=0, help="time N contact.created per run instead")
    parser.add_argument(
        "--preferences",
        type=int,
        default=0,
        help="time N contactPreference.updated (existing contacts) per run instead",
    )
    parser.add_argument("--unpark", type=int, default=0, help="time re-applying N parked events instead")
    parser.add_argument("--tag", default=f"inproc{int(time.time())}")
    args = parser.parse_args()
    django.setup()
    logging.disable(logging.INFO)  # the per-event log lines are the same for both paths; keep stdout readable
    if args.signups:
        figures = signups(count=args.signups, batch=args.batch, repeats=args.repeats, tag=args.tag)
    elif args.unpark:
        figures = unpark(count=args.unpark, repeats=args.repeats, tag=args.tag)
    elif args.preferences:
        figures = preferences(count=args.preferences, repeats=args.repeats, tag=args.tag)
    else:
        figures = compare(contacts=args.contacts, batch=args.batch, repeats=args.repeats, tag=args.tag)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
