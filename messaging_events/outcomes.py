from dataclasses import dataclass, field

from messaging_events.models import InboundEventStatus


@dataclass(frozen=True)
class Outcome:
    """What a handler did with an event. Rejections are raised as `crm.errors.ApplicationError`."""

    status: InboundEventStatus
    tenant_id: int | None = None
    note: str = ""
    # Messaging contact ids that became linked: their parked events can now be applied.
    linked_contact_ids: tuple[str, ...] = field(default=())

    @classmethod
    def applied(cls, tenant_id: int, *, note: str = "", linked: tuple[str, ...] = ()) -> "Outcome":
        return cls(InboundEventStatus.APPLIED, tenant_id, note, linked)

    @classmethod
    def ignored(cls, tenant_id: int | None, note: str) -> "Outcome":
        return cls(InboundEventStatus.IGNORED, tenant_id, note)

    @classmethod
    def parked(cls, tenant_id: int | None, note: str) -> "Outcome":
        return cls(InboundEventStatus.PARKED, tenant_id, note)
