"""The two tenant-staff roles as groups (`grant_tenant_access` puts users in one of them).

Permissions normally appear after `migrate` (post_migrate); they are created here first so
that the groups get them on a fresh database. The lists are frozen here on purpose: a later
model gets its permissions in its own migration.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = "CRM viewer"
EDITOR = "CRM editor"

# Everything tenant staff may look at, scoped to their tenants by the admin.
VIEW = [
    ("crm", "view_tenant"),
    ("crm", "view_profile"),
    ("crm", "view_contactlink"),
    ("crm", "view_activity"),
    ("crm", "view_marketingconsent"),
    ("crm", "view_consentchange"),
    ("crm", "view_campaigninteraction"),
    ("crm", "view_attributionevent"),
    ("crm", "view_hardbounce"),
    ("crm", "view_pendingscorerefresh"),
    ("crm", "view_segment"),
    ("crm", "view_segmentmembership"),
    ("messaging_events", "view_inboundevent"),
]
# Editors also correct profiles, record consent statements (both need change_profile) and run segments.
EDIT = [
    ("crm", "change_profile"),
    ("crm", "add_segment"),
    ("crm", "change_segment"),
    ("crm", "delete_segment"),
]


def _permissions(apps, pairs):
    permission = apps.get_model("auth", "Permission")
    found = []
    for app_label, codename in pairs:
        found.append(permission.objects.get(content_type__app_label=app_label, codename=codename))
    return found


def create_groups(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group = apps.get_model("auth", "Group")
    viewer, _ = group.objects.get_or_create(name=VIEWER)
    viewer.permissions.set(_permissions(apps, VIEW))
    editor, _ = group.objects.get_or_create(name=EDITOR)
    editor.permissions.set(_permissions(apps, VIEW + EDIT))


def delete_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[VIEWER, EDITOR]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("crm", "0002_initial"),
        ("messaging_events", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_groups, delete_groups)]
