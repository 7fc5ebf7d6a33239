"""Tenant scoping for the admin: a non-superuser sees and edits only their tenants' rows.

Staff users belong to tenants through `Tenant.staff`. Everything the admin shows comes
through `ModelAdmin.get_queryset`, which this mixin filters, so changelists, change pages,
searches, actions, raw-id popups and autocompletes (which use the *target* admin's
`get_queryset`) are all scoped. Foreign-key choices and list-filter choices are built from
other models, so they are scoped here too. A row outside the user's tenants answers 404,
exactly like a row that does not exist, so ids cannot be probed.
"""

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from crm.models import Tenant

_CACHE_ATTR = "_crm_tenant_ids"

if TYPE_CHECKING:
    # The mixins below sit before a ModelAdmin (or an inline) in the bases: their `super()` is one.
    AdminBase = admin.ModelAdmin[Any]
else:
    AdminBase = object


def sees_all_tenants(user: object) -> bool:
    return bool(getattr(user, "is_active", False) and getattr(user, "is_superuser", False))


def user_tenant_ids(request: HttpRequest) -> list[int]:
    """The ids of the tenants the request's user is staff of, cached on the request."""
    cached = getattr(request, _CACHE_ATTR, None)
    if cached is None:
        user = request.user
        cached = list(Tenant.objects.filter(staff=user).values_list("pk", flat=True)) if user.is_authenticated else []
        setattr(request, _CACHE_ATTR, cached)
    return cached


def tenant_path_for(model: type[Model]) -> str | None:
    """The lookup from `model` to its tenant: "" for Tenant itself, None when it has no tenant."""
    if model is Tenant:
        return ""
    try:
        field = model._meta.get_field("tenant")
    except FieldDoesNotExist:
        pass
    else:
        if field.is_relation and field.related_model is Tenant:
            return "tenant"
    try:
        field = model._meta.get_field("profile")
    except FieldDoesNotExist:
        return None
    return "profile__tenant" if field.is_relation else None


def scope_queryset(queryset: QuerySet, request: HttpRequest, tenant_path: str | None = None) -> QuerySet:
    """Limit a queryset of any tenant-owned model to the request user's tenants.

    Rows with no tenant (an inbox row that named none) match no tenant and are left out.
    Models with no tenant at all (users, content types) are returned unchanged.
    """
    if sees_all_tenants(request.user):
        return queryset
    path = tenant_path_for(queryset.model) if tenant_path is None else tenant_path
    if path is None:
        return queryset
    lookup = f"{path}__in" if path else "pk__in"
    return queryset.filter(**{lookup: user_tenant_ids(request)})


class ScopedRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A related-field filter whose choices are only the rows the user may see (e.g. their tenants)."""

    def field_choices(self, field, request, model_admin):
        related_model = field.remote_field.model
        ordering = self.field_admin_ordering(field, request, model_admin) or ("pk",)
        queryset = scope_queryset(related_model._default_manager.order_by(*ordering), request)
        return [(obj.pk, str(obj)) for obj in queryset]

    def has_output(self) -> bool:
        # Django drops a filter without output *and its parameters*; a filter in use must still apply.
        return bool(self.used_parameters) or super().has_output()

    @property
    def include_empty_choice(self) -> bool:
        # "(None)" only makes sense to someone who can see rows without a tenant.
        return super().include_empty_choice and sees_all_tenants(self._request_user)

    def __init__(self, field, request, params, model, model_admin, field_path):
        self._request_user = request.user
        super().__init__(field, request, params, model, model_admin, field_path)


class TenantScopedAdminMixin(AdminBase):
    """Mix into a ModelAdmin or an inline. `tenant_path` overrides the lookup to the tenant."""

    tenant_path: str | None = None

    def _tenant_path(self) -> str | None:
        return self.tenant_path if self.tenant_path is not None else tenant_path_for(self.model)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return scope_queryset(super().get_queryset(request), request, self._tenant_path())

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Model:
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            # Another tenant's row looks exactly like a row that does not exist.
            raise Http404("No such object.")
        return obj

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        # The queryset is already scoped; scoping again keeps search safe whoever passes it in.
        return scope_queryset(queryset, request, self._tenant_path()), may_have_duplicates

    def _scope_choices(self, db_field, request: HttpRequest, kwargs: dict) -> dict:
        """Limit a relation's choices to the user's tenants, unless the caller chose a queryset."""
        related = db_field.remote_field.model
        if "queryset" not in kwargs and tenant_path_for(related) is not None:
            base = self.get_field_queryset(None, db_field, request)
            if base is None:
                base = related._default_manager.complex_filter(db_field.get_limit_choices_to())
            kwargs["queryset"] = scope_queryset(base, request)
        return kwargs

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        return super().formfield_for_foreignkey(db_field, request, **self._scope_choices(db_field, request, kwargs))

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        return super().formfield_for_manytomany(db_field, request, **self._scope_choices(db_field, request, kwargs))


class ReadOnlyForStaffMixin(AdminBase):
    """Event-derived records: only superusers may add, change or delete them."""

    def has_add_permission(self, request: HttpRequest, *args: object) -> bool:
        return sees_all_tenants(request.user) and super().has_add_permission(request, *args)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return sees_all_tenants(request.user) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return sees_all_tenants(request.user) and super().has_delete_permission(request, obj)


class ImmutableAdminMixin:
    """Records nobody edits in the admin, superusers included: the consent ledger and the inbox."""

    def has_add_permission(self, request: HttpRequest, *args: object) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
