"""Generated contact export files for backfill tests and measurements.

python -m tests.ops.contact_files 100000 /tmp/contacts-100k.csv [--bad-every 1000]
"""

import argparse
import csv
import json
from pathlib import Path

HEADER = [
    "eventId", "tenantId", "contactId", "email", "phoneNumber", "firstName", "lastName",
    "emailOptIn", "smsOptIn", "pushOptIn", "whatsappOptIn",
]  # fmt: skip


def row(n: int, *, tenants: int = 4, bad_every: int = 0) -> dict[str, str]:
    bad = bad_every and n % bad_every == bad_every - 1
    return {
        "eventId": f"gen-{n:07d}" if n % 2 else "",
        "tenantId": f"gen-tenant-{n % tenants}",
        "contactId": f"gen-contact-{n:07d}",
        "email": "not-an-email" if bad else f"person.{n}@example.com",
        "phoneNumber": f"+2782{n % 10_000_000:07d}" if n % 3 == 0 else "",
        "firstName": f"First{n}",
        "lastName": f"Last{n}",
        "emailOptIn": "true" if n % 4 else "false",
        "smsOptIn": "yes" if n % 3 == 0 else "",
        "pushOptIn": "",
        "whatsappOptIn": "0" if n % 5 == 0 else "",
    }


def write_csv(path: Path, rows: int, *, bad_every: int = 0) -> int:
    """Returns the number of bad rows written."""
    bad = 0
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        for n in range(rows):
            values = row(n, bad_every=bad_every)
            bad += values["email"] == "not-an-email"
            writer.writerow(values)
    return bad


def write_jsonl(path: Path, rows: int, *, bad_every: int = 0) -> int:
    bad = 0
    with path.open("w") as handle:
        for n in range(rows):
            values = row(n, bad_every=bad_every)
            bad += values["email"] == "not-an-email"
            out = {k: v for k, v in values.items() if v and not k.endswith("OptIn")}
            out.update({k: v in ("true", "yes", "1") for k, v in values.items() if k.endswith("OptIn") and v})
            handle.write(json.dumps(out) + "\n")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", type=int)
    parser.add_argument("path", type=Path)
    parser.add_argument("--bad-every", type=int, default=1000)
    args = parser.parse_args()
    writer = write_jsonl if args.path.suffix == ".jsonl" else write_csv
    bad = writer(args.path, args.rows, bad_every=args.bad_every)
    print(f"wrote {args.rows} rows ({bad} bad) to {args.path}")


if __name__ == "__main__":
    main()
