"""The bench's streams, from the generator the tests and the demo share (`messaging_events/streams/mixed.py`,
whose docstring states the mix), and their files.

The names below are those the bench phases call (`stream.generate`, `stream.campaign`, ...).

    python -m bench.stream --contacts 10000 --tag a > stream.jsonl
"""

import argparse
import json
import sys
from collections.abc import Iterable

from messaging_events.streams.events import StreamJob
from messaging_events.streams.mixed import (
    Contact,
    campaign,
    contacts_of,
    generate,
    low_flood,
    preference_changes,
    sample,
)

__all__ = ["Contact", "campaign", "contacts_of", "generate", "low_flood", "preference_changes", "sample", "write_jsonl"]


def _lines(jobs: Iterable[StreamJob]) -> Iterable[str]:
    return (json.dumps(job, separators=(",", ":")) + "\n" for job in jobs)


def write_jsonl(jobs: Iterable[StreamJob], path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(_lines(jobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--tag", default="a")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.stdout.writelines(_lines(generate(args.contacts, args.tenants, args.tag, args.seed)))


if __name__ == "__main__":
    main()
