"""The admin's forms: what staff may type, normalised the way events are. Saving is the admins' job,
through the CRM services."""

from collections.abc import Callable

from django import forms

from crm.errors import ApplicationError
from crm.models import Channel, Profile, Segment
from crm.normalise import email_normalise, phone_normalise


def _normalised(value: str, normalise: Callable[[str], str], label: str) -> str:
    """An identity field as events store it; empty stays empty, anything unreadable is a form error."""
    if not value:
        return ""
    try:
        return normalise(value)
    except ApplicationError as exc:
        raise forms.ValidationError(f"{label} {exc.message}.") from None


class ProfileAdminForm(forms.ModelForm):
    """Normalises identity fields the way events do: lower-cased email, E.164 phone."""

    class Meta:
        model = Profile
        fields = ("first_name", "last_name", "email", "phone", "email_verified", "phone_verified")

    def clean_email(self) -> str:
        return _normalised(self.cleaned_data.get("email", ""), email_normalise, "Email")

    def clean_phone(self) -> str:
        return _normalised(self.cleaned_data.get("phone", ""), phone_normalise, "Phone")


class StaffConsentForm(forms.Form):
    """A consent statement staff record by hand on a profile (`views.record_consent_view`)."""

    channel = forms.ChoiceField(choices=Channel.choices)
    opted_in = forms.TypedChoiceField(
        label="Decision",
        choices=(("true", "Opted in"), ("false", "Opted out")),
        coerce=lambda value: value == "true",
        widget=forms.RadioSelect,
    )
    lawful_basis = forms.CharField(
        max_length=300,
        help_text="The evidence: who asked, how and when (for example “phoned support on 2024-05-01 to stop SMS”).",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )


class SegmentAdminForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ("tenant", "name", "required_consent_channel", "min_engagement_score", "require_verified_email")
