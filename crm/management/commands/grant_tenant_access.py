"""Give a colleague access to one tenant in the admin, or take it away (docs/operations.md)."""

from django.core.management.base import BaseCommand, CommandError

from crm.errors import ApplicationError
from crm.services.access import ROLE_GROUPS, Role, tenant_access_grant, tenant_access_revoke


class Command(BaseCommand):
    help = (
        "Make USER staff of TENANT (its tenantId) in the admin, as a viewer (reads everything of the tenant) "
        "or an editor (also edits profiles, records consent, manages segments). --revoke removes the access."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("tenant", help="The tenant's id as the Messaging service names it (tenantId).")
        parser.add_argument("--role", choices=[role.value for role in Role], help="Required unless --revoke.")
        parser.add_argument("--create", action="store_true", help="Create the user if it does not exist.")
        parser.add_argument("--revoke", action="store_true", help="Remove the user from the tenant's staff.")

    def handle(self, *args, **options) -> None:
        try:
            if options["revoke"]:
                if options["create"]:
                    raise CommandError("--create and --revoke cannot be combined")
                change = tenant_access_revoke(username=options["username"], tenant_external_id=options["tenant"])
            else:
                if not options["role"]:
                    raise CommandError("--role viewer|editor is required (or --revoke)")
                change = tenant_access_grant(
                    username=options["username"],
                    tenant_external_id=options["tenant"],
                    role=Role(options["role"]),
                    create=options["create"],
                )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if options["revoke"]:
            left = ", ".join(change.tenants) or "none (removed from the CRM groups and the admin)"
            self.stdout.write(f"{change.username} is no longer staff of {change.tenant}. Tenants left: {left}.")
            return
        if change.created_user:
            self.stdout.write(
                f"Created user {change.username} without a password: "
                f"set one with `manage.py changepassword {change.username}`."
            )
        assert change.role is not None  # a grant always leaves the user a role
        self.stdout.write(
            f"{change.username} is now {ROLE_GROUPS[change.role]!r} for tenants: {', '.join(change.tenants)}."
        )
