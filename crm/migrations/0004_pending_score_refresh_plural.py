from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("crm", "0003_crm_role_groups")]

    operations = [
        migrations.AlterModelOptions(
            name="pendingscorerefresh", options={"verbose_name_plural": "pending score refreshes"}
        ),
    ]
