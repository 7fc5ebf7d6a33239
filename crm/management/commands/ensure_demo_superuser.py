"""Create the demo superuser `admin`/`admin` for `make up`, once. Refuses outside DEBUG unless --force."""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "admin"  # noqa: S105 - a local demo account, refused outside DEBUG


class Command(BaseCommand):
    help = "Create the demo superuser admin/admin if it does not exist (DEBUG only, or --force)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--force", action="store_true", help="Run even when DEBUG is off.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError("Refusing to create a demo superuser with DEBUG off; pass --force if you mean it.")
        user_model = get_user_model()
        if user_model._default_manager.filter(username=DEMO_USERNAME).exists():
            self.stdout.write(f"Superuser {DEMO_USERNAME!r} already exists; left unchanged.")
            return
        try:
            with transaction.atomic():
                user_model._default_manager.create_superuser(username=DEMO_USERNAME, email="", password=DEMO_PASSWORD)
        except IntegrityError:  # created concurrently by another `make up`
            self.stdout.write(f"Superuser {DEMO_USERNAME!r} already exists; left unchanged.")
            return
        self.stdout.write(f"Created superuser {DEMO_USERNAME!r} (password {DEMO_PASSWORD!r}).")
