"""The admin's own page: recording a consent statement on a profile by hand (`ProfileAdmin.get_urls`).

The statement goes through `consent_record_by_staff`, which appends it to the ledger with the
staff member as actor; this page only checks the permission and shows the form. The service is
imported where it is called, as in `profiles`: the admin tests put a recorder in its place.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from crm.admin.forms import StaffConsentForm
from crm.errors import ApplicationError
from crm.models import Profile


def record_consent_view(
    request: HttpRequest, object_id: str, *, model_admin: "admin.ModelAdmin[Profile]"
) -> HttpResponse:
    from crm.services.consent import consent_record_by_staff

    profile = model_admin.get_object(request, object_id)  # scoped: another tenant's profile is a 404
    if profile is None:  # the scoped admin raises 404 itself; a plain ModelAdmin returns None
        raise Http404("No such object.")
    if not model_admin.has_change_permission(request, profile):
        raise PermissionDenied
    form = StaffConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            consent_record_by_staff(
                profile=profile,
                channel=form.cleaned_data["channel"],
                opted_in=form.cleaned_data["opted_in"],
                user=request.user,
                lawful_basis=form.cleaned_data["lawful_basis"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            verb = "opt-in" if form.cleaned_data["opted_in"] else "opt-out"
            model_admin.message_user(
                request,
                f"Recorded a {form.cleaned_data['channel']} {verb} in the consent ledger.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:crm_profile_change", args=[profile.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": profile,
        "title": f"Record a consent change for {profile}",
        "form": form,
        "has_view_permission": True,
    }
    return TemplateResponse(request, "admin/crm/profile/record_consent.html", context)
