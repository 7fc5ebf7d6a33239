from typing import Any

from django.conf import settings
from django.db import models


class Channel(models.TextChoices):
    EMAIL = "email", "email"
    SMS = "sms", "sms"
    PUSH = "push", "push"
    WHATSAPP = "whatsapp", "whatsapp"


class Tenant(models.Model):
    """A Messaging tenant. `external_id` is the producer's `tenantId`."""

    external_id = models.CharField(max_length=128, unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    staff = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="crm_tenants")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name or self.external_id


class Profile(models.Model):
    # No index of its own: profile_tenant_email starts with it (one index less to write per profile).
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="profiles", db_index=False)
    first_name = models.CharField(max_length=200, blank=True, default="")
    last_name = models.CharField(max_length=200, blank=True, default="")
    email = models.CharField(max_length=320, blank=True, default="", help_text="Trimmed and lower-cased.")
    phone = models.CharField(max_length=32, blank=True, default="", help_text="E.164.")
    email_verified = models.BooleanField(null=True, blank=True)
    phone_verified = models.BooleanField(null=True, blank=True)
    # Tri-state: None means the Messaging service has made no statement.
    email_opt_in = models.BooleanField(null=True, blank=True)
    sms_opt_in = models.BooleanField(null=True, blank=True)
    push_opt_in = models.BooleanField(null=True, blank=True)
    whatsapp_opt_in = models.BooleanField(null=True, blank=True)
    engagement_score = models.FloatField(default=0.0)
    engagement_breakdown = models.JSONField(default=dict, blank=True)
    engagement_scored_at = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    last_email_open_at = models.DateTimeField(null=True, blank=True)
    # Who set each identity field and when: {"email": {"by": "event"|"staff", "at": iso, "event": key}}.
    # The earliest event's value wins whatever the arrival order; staff edits are never overwritten.
    field_sources = models.JSONField(default=dict, blank=True)
    # What `contact.updated` said about consent, which it does not decide (docs/decisions.md):
    # {"sms": {"opted_in": true, "at": iso, "event": key}}, the latest report per channel.
    consent_reports = models.JSONField(default=dict, blank=True)
    # Created by an event that named an unknown contact; merges into a real profile
    # when `contact.created` resolves to one.
    is_stub = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "email"], name="profile_tenant_email"),
            models.Index(fields=["tenant", "phone"], name="profile_tenant_phone"),
        ]
        # What the composite keys of the rows a profile owns reference (owning_profile).
        constraints = [models.UniqueConstraint(fields=["id", "tenant"], name="profile_id_tenant")]

    def __str__(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return name or f"Profile #{self.pk}"

    def opt_in(self, channel: str) -> bool | None:
        return getattr(self, f"{channel}_opt_in")


# Every row a profile owns also names the profile's tenant, so that tenant-scoped queries need no join. The
# database checks the pair: one composite foreign key (profile_id, tenant_id) -> profile (id, tenant_id) on each
# such table (migration 0009), instead of one key to the profile and one to the tenant. A row can then never
# name another tenant than its profile's, and each insert costs one key check, not two (docs/decisions.md).
def owning_tenant(related_name: str = "+") -> Any:
    return models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name=related_name, db_constraint=False)


def owning_profile(related_name: str, *, db_index: bool = True) -> Any:
    return models.ForeignKey(
        Profile, on_delete=models.CASCADE, related_name=related_name, db_index=db_index, db_constraint=False
    )


class ContactLink(models.Model):
    """Ties a Messaging `contactId` to a profile. A contactId links to at most one profile."""

    tenant = owning_tenant("contact_links")
    profile = owning_profile("contact_links")
    messaging_contact_id = models.CharField(max_length=128, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.messaging_contact_id


class ActivityType(models.TextChoices):
    CONSENT_OPTED_IN = "CONSENT_OPTED_IN"
    CONSENT_OPTED_OUT = "CONSENT_OPTED_OUT"
    MESSAGE_SENT = "MESSAGE_SENT"
    MESSAGE_DELIVERED = "MESSAGE_DELIVERED"
    MESSAGE_FAILED = "MESSAGE_FAILED"
    MESSAGE_BOUNCED = "MESSAGE_BOUNCED"
    EMAIL_OPENED = "EMAIL_OPENED"
    EMAIL_CLICKED = "EMAIL_CLICKED"
    SMS_REPLIED = "SMS_REPLIED"
    PROFILE_UPDATED = "PROFILE_UPDATED"
    PROFILE_MERGED = "PROFILE_MERGED"


class Activity(models.Model):
    tenant = owning_tenant()
    # Indexed by activity_profile_type_at, which starts with it.
    profile = owning_profile("activities", db_index=False)
    type = models.CharField(max_length=32, choices=ActivityType.choices)
    occurred_at = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)
    source_event = models.ForeignKey(
        "messaging_events.InboundEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["profile", "type", "occurred_at"], name="activity_profile_type_at")]
        verbose_name_plural = "activities"

    def __str__(self) -> str:
        return f"{self.type} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class ConsentSource(models.TextChoices):
    MESSAGING_EVENT = "messaging_event", "Messaging event"
    BOUNCE_AUTOMATION = "bounce_automation", "bounce automation"
    SMS_KEYWORD = "sms_keyword", "SMS keyword"
    ADMIN = "admin", "admin"


class MarketingConsent(models.Model):
    """Current consent per profile and channel: the latest statement in the ledger by occurred-at."""

    tenant = owning_tenant()
    # Indexed by consent_profile_channel, which starts with it.
    profile = owning_profile("consents", db_index=False)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    opted_in = models.BooleanField(null=True)
    changed_at = models.DateTimeField(null=True, help_text="Occurred-at of the deciding statement.")
    source = models.CharField(max_length=32, choices=ConsentSource.choices, blank=True, default="")
    deciding_change = models.ForeignKey("ConsentChange", null=True, on_delete=models.SET_NULL, related_name="+")
    # The address this consent is for: the profile's email (email) or phone (SMS, WhatsApp) when decided.
    address = models.CharField(max_length=320, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "channel"], name="consent_profile_channel")]

    def __str__(self) -> str:
        return f"{self.channel}: {self.opted_in}"


class ConsentChange(models.Model):
    """Append-only ledger of every consent statement the CRM received, applied or not."""

    tenant = owning_tenant()
    # Indexed by consent_change_lookup and consent_change_once, which start with it.
    profile = owning_profile("consent_changes", db_index=False)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    opted_in = models.BooleanField()
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=32, choices=ConsentSource.choices)
    source_event = models.ForeignKey(
        "messaging_events.InboundEvent", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    lawful_basis = models.CharField(max_length=300, blank=True, default="")
    # Older than the decision in force when it arrived, so it did not change the current state.
    superseded = models.BooleanField(default=False)
    # The statement's identity (source, source key, occurred-at), and its last tiebreak (docs/decisions.md).
    tiebreak = models.CharField(max_length=160)
    # The contact point it is about: the email (email) or E.164 phone (SMS, WhatsApp); "" for push or
    # when not known. It counts for a profile only while the profile holds that address.
    address = models.CharField(max_length=320, blank=True, default="")
    # False: the event stated no address, so it is the address its contact had at occurred-at
    # (`ContactAddress`), kept current as the contact's addresses become known.
    address_stated = models.BooleanField(default=True)
    contact_id = models.CharField(max_length=128, blank=True, default="", help_text="Messaging contactId.")
    # When the pipeline received it (the BullMQ job timestamp; now for staff). A later occurred-at is
    # ordered at this time instead (the raw value is kept) and noted in `warning`.
    received_at = models.DateTimeField(null=True, blank=True)
    warning = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["occurred_at", "tiebreak"]
        indexes = [
            models.Index(fields=["profile", "channel", "occurred_at"], name="consent_change_lookup"),
            # consent_rebuild.consent_follow_addresses reads a contact's statements that stated no address
            # whenever an existing profile's contact gains an address: without it, a scan of the ledger.
            # Partial: statements with an address (nearly all) are not in it.
            models.Index(
                fields=["contact_id"], condition=models.Q(address_stated=False), name="consent_change_unstated"
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["profile", "channel", "tiebreak"], name="consent_change_once"),
        ]

    def __str__(self) -> str:
        verb = "opt-in" if self.opted_in else "opt-out"
        return f"{self.channel} {verb} @ {self.occurred_at:%Y-%m-%d %H:%M} ({self.source})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.pop("allow_update", False):
            raise ValueError("The consent ledger is append-only.")
        super().save(*args, **kwargs)


class ContactAddress(models.Model):
    """Each email or phone a Messaging contact's own events stated, and when: a contact's address as of
    any time, for consent statements that name no address (`contactPreference.updated`, STOP replies,
    bounces)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    contact_id = models.CharField(max_length=128)
    kind = models.CharField(max_length=8, choices=[("email", "email"), ("phone", "phone")])
    address = models.CharField(max_length=320)
    occurred_at = models.DateTimeField()
    source_key = models.CharField(max_length=300)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contact_id", "kind", "source_key"], name="contact_address_once"),
        ]
        indexes = [models.Index(fields=["contact_id", "kind", "occurred_at"], name="contact_address_lookup")]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.kind} {self.address} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class InteractionType(models.TextChoices):
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    BOUNCED = "BOUNCED"
    OPENED = "OPENED"
    CLICKED = "CLICKED"


class CampaignInteraction(models.Model):
    tenant = owning_tenant()
    profile = owning_profile("interactions")
    message_id = models.CharField(max_length=128)
    type = models.CharField(max_length=16, choices=InteractionType.choices)
    campaign_id = models.CharField(max_length=128, blank=True, default="")
    template_id = models.CharField(max_length=128, blank=True, default="")
    channel = models.CharField(max_length=16, blank=True, default="")
    count = models.PositiveIntegerField(default=1)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "message_id", "type"], name="interaction_once_per_type"),
        ]
        indexes = [models.Index(fields=["profile", "type"], name="interaction_profile_type")]

    def __str__(self) -> str:
        return f"{self.type} {self.message_id} x{self.count}"


class AttributionEvent(models.Model):
    tenant = owning_tenant()
    profile = owning_profile("attributions")
    source_event = models.OneToOneField(
        "messaging_events.InboundEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    campaign_id = models.CharField(max_length=128, blank=True, default="")
    message_id = models.CharField(max_length=128, blank=True, default="")
    link_id = models.CharField(max_length=128, blank=True, default="")
    link_url = models.TextField(blank=True, default="")
    utm_source = models.CharField(max_length=200, blank=True, default="")
    utm_medium = models.CharField(max_length=200, blank=True, default="")
    utm_campaign = models.CharField(max_length=200, blank=True, default="")
    utm_term = models.CharField(max_length=200, blank=True, default="")
    utm_content = models.CharField(max_length=200, blank=True, default="")
    occurred_at = models.DateTimeField()

    class Meta:
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.campaign_id or self.utm_campaign} {self.link_id}"


class Segment(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="segments")
    name = models.CharField(max_length=200)
    required_consent_channel = models.CharField(max_length=16, choices=Channel.choices, blank=True, default="")
    min_engagement_score = models.FloatField(null=True, blank=True)
    require_verified_email = models.BooleanField(default=False)
    members: "models.ManyToManyField[Profile, SegmentMembership]" = models.ManyToManyField(
        Profile, through="SegmentMembership", related_name="segments"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="segment_name_per_tenant")]

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    tenant = owning_tenant()
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    profile = owning_profile("segment_memberships")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "profile"], name="segment_member_once")]

    def __str__(self) -> str:
        return f"{self.segment_id} ∋ {self.profile_id}"


class PendingScoreRefresh(models.Model):
    """Profiles whose engagement score awaits recomputation. One row per profile coalesces many events."""

    profile = models.OneToOneField(Profile, on_delete=models.CASCADE, primary_key=True, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "pending score refreshes"

    def __str__(self) -> str:
        return f"score refresh for profile {self.profile_id}"


class HardBounce(models.Model):
    """Hard bounces per profile, the input of the bounce opt-out automation."""

    tenant = owning_tenant()
    profile = owning_profile("hard_bounces")
    message_id = models.CharField(max_length=128)
    occurred_at = models.DateTimeField()
    # The bounced contact: the automation's opt-out is for that contact's email at the bounce.
    contact_id = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "message_id"], name="hard_bounce_once")]

    def __str__(self) -> str:
        return f"hard bounce {self.message_id} @ {self.occurred_at:%Y-%m-%d}"


class BackfillCheckpoint(models.Model):
    """How far `backfill_contacts` got in one file: written in the same transaction as each chunk, so
    `--resume` continues after the last committed line. Keyed by the file's sha256 and the `--tenant`
    override (the same bytes imported for another tenant are another import)."""

    file_sha256 = models.CharField(max_length=64)
    tenant_override = models.CharField(max_length=128, blank=True, default="")
    file_name = models.CharField(max_length=300, blank=True, default="")
    last_line = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    completed = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["file_sha256", "tenant_override"], name="backfill_checkpoint_once"),
        ]

    def __str__(self) -> str:
        return f"{self.file_name} @ line {self.last_line}"
