"""`python manage.py export_profile --tenant T --contact-id C`: the subject access export as JSON on stdout."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from crm.errors import ApplicationError
from crm.services.export import profile_export


class Command(BaseCommand):
    help = "Print everything the CRM holds about one person (GDPR/POPIA subject access) as JSON."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="The Messaging tenantId.")
        parser.add_argument("--contact-id", required=True, help="The Messaging contactId.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            export = profile_export(tenant_external_id=options["tenant"], contact_id=options["contact_id"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(json.dumps(export, indent=2, ensure_ascii=False))
