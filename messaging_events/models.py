from django.db import models
from django.db.models import Value


class InboundEventStatus(models.TextChoices):
    RECEIVED = "received", "received"  # row written, handler not yet finished (never seen after commit)
    APPLIED = "applied", "applied"
    IGNORED = "ignored", "ignored"
    REJECTED = "rejected", "rejected"
    PARKED = "parked", "parked"
    FAILED = "failed", "failed"


class ConflictState(models.TextChoices):
    """Same identity, different content: a producer reused an eventId (docs/decisions.md)."""

    NONE = "", "none"
    OPEN = "open", "open"  # a delivery said something else under this identity; staff must look
    RESOLVED = "resolved", "resolved"


FINAL_STATUSES = frozenset({InboundEventStatus.APPLIED, InboundEventStatus.IGNORED, InboundEventStatus.REJECTED})
REPLAYABLE_STATUSES = frozenset({InboundEventStatus.FAILED, InboundEventStatus.PARKED, InboundEventStatus.REJECTED})


class InboundEvent(models.Model):
    """The inbox: one row per event identity, whatever the number of deliveries.

    `tenant_ref` is the tenant id exactly as the producer stated it ("" when the job
    named none). With `event_type` and `idempotency_key` it is the event's identity and is
    known from the job alone, so a redelivery always finds its row; `tenant` is the
    tenant the event resolved to, which for message events may come from the contact link.
    A delivery with the same identity and other content is a conflict: it is kept in
    `conflict_data` and changes nothing until staff resolve it.
    `warnings` lists the optional values the contract dropped or reinterpreted (partial acceptance,
    `messaging_events.contract.fields.FieldWarning`), from the last time a worker judged the row.
    """

    tenant = models.ForeignKey("crm.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    tenant_ref = models.CharField(max_length=128, blank=True, default="")
    idempotency_key = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64, db_index=True)
    # sha256 of the canonical stored data: a redelivery has the same, a conflict another.
    content_hash = models.CharField(max_length=64, blank=True, default="")
    conflict = models.CharField(max_length=8, choices=ConflictState.choices, blank=True, default="")
    conflict_data = models.JSONField(null=True, blank=True, help_text="The other content seen under this identity.")
    conflict_hash = models.CharField(max_length=64, blank=True, default="")
    conflict_job_timestamp = models.DateTimeField(null=True, blank=True)
    priority = models.CharField(max_length=8)
    messaging_contact_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    bullmq_job_id = models.CharField(max_length=64, blank=True, default="")
    job_name = models.CharField(max_length=128, blank=True, default="")
    raw_data = models.JSONField(null=True, blank=True)
    job_timestamp = models.DateTimeField(null=True, blank=True, help_text="BullMQ job timestamp.")
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=InboundEventStatus.choices, db_index=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker tried to apply it.")
    deliveries = models.PositiveIntegerField(default=1, help_text="Times it reached a worker.")
    job_attempts = models.PositiveIntegerField(default=0, help_text="BullMQ attemptsMade when last bridged.")
    # A database default too: the claims insert rows with raw SQL that does not name the column.
    warnings = models.JSONField(
        default=list,
        db_default=Value([], output_field=models.JSONField()),
        blank=True,
        help_text="Optional values dropped or reinterpreted: [{field, problem, value}].",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_ref", "event_type", "idempotency_key"], name="inbound_event_typed_identity"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "received_at"], name="inbound_status_received"),
            models.Index(fields=["tenant", "status"], name="inbound_tenant_status"),
            models.Index(
                fields=["conflict"], name="inbound_conflict_open", condition=models.Q(conflict=ConflictState.OPEN)
            ),
            # Few rows have warnings: the admin filter and the status count read only those.
            models.Index(fields=["status"], name="inbound_with_warnings", condition=~models.Q(warnings=[])),
        ]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.idempotency_key} [{self.status}]"
