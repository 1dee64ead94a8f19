"""The catalog admin. Prices are append-only: an existing version is shown read-only with a
"new version from this" link; adding a version goes through the service, which refuses an
effective_from that would rewrite history. The price list can be exported and imported as CSV
(preview first, then confirm)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from gateway_billing.errors import ApplicationError

from . import selectors, services
from .models import TOKEN_PRICE_FIELDS, UNIT_PRICE_FIELDS, Model, Price, Provider
from .money import format_usd

PRICE_FIELDS = TOKEN_PRICE_FIELDS + UNIT_PRICE_FIELDS
MAX_CSV_BYTES = 1_000_000


def _usd(value: Decimal | None) -> str:
    return "N/A" if value is None else format_usd(value)


def _new_version_url(model_id: int, source: Price | None = None) -> str:
    query = {"model": model_id}
    if source is not None:
        query["from_version"] = source.pk
    return f"{reverse('admin:pricing_price_add')}?{urlencode(query)}"


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "model_count"]
    search_fields = ["slug", "name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).annotate(model_count=Count("models"))

    @admin.display(ordering="model_count", description="models")
    def model_count(self, obj: Provider) -> int:
        return obj.model_count  # type: ignore[attr-defined]

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        services.provider_save(provider=obj)

    def delete_model(self, request: HttpRequest, obj: Provider) -> None:
        super().delete_model(request, obj)
        services.catalog_version_bump()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        super().delete_queryset(request, queryset)
        services.catalog_version_bump()


class PriceInline(admin.TabularInline):
    """The model's price history, newest first, read-only."""

    model = Price
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["effective_from", *TOKEN_PRICE_FIELDS, "author", "created_at", "note"]
    readonly_fields = fields
    ordering = ["-effective_from"]
    verbose_name_plural = "price history (newest first)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "provider", "kind", "price_versions"]
    list_filter = ["provider", "kind"]
    search_fields = ["name", "display_name"]
    list_select_related = ["provider"]
    readonly_fields = ["new_price_version", "created_at", "updated_at"]
    fields = ["provider", "name", "display_name", "kind", "new_price_version", "created_at"]
    inlines = [PriceInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Model]:
        return super().get_queryset(request).annotate(price_versions=Count("prices"))

    @admin.display(ordering="price_versions", description="price versions")
    def price_versions(self, obj: Model) -> int:
        return obj.price_versions  # type: ignore[attr-defined]

    @admin.display(description="prices")
    def new_price_version(self, obj: Model) -> str:
        if obj.pk is None:
            return "Save the model first, then add its first price version."
        latest = obj.prices.order_by("-effective_from").first()
        label = "Add a new price version" if latest else "Add the first price version"
        return format_html(
            '<a class="button" href="{}">{}</a>', _new_version_url(obj.pk, latest), label
        )

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        services.model_save(model=obj)

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        super().delete_model(request, obj)
        services.catalog_version_bump()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        super().delete_queryset(request, queryset)
        services.catalog_version_bump()


class PriceVersionForm(forms.ModelForm):
    """Adds a version; validation is the service's, so the form and the service agree."""

    class Meta:
        model = Price
        fields = ["model", "effective_from", *PRICE_FIELDS, "gpu_second_prices", "note"]
        help_texts = {
            "effective_from": "Must be later than the model's latest version. Default: now.",
            "gpu_second_prices": 'USD per GPU second by machine type: {"H100": "0.00195"}',
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        model, effective_from = cleaned.get("model"), cleaned.get("effective_from")
        if model is None or effective_from is None or self.errors:
            return cleaned
        try:
            services.price_version_validate(
                model=model,
                effective_from=effective_from,
                values={name: cleaned.get(name) for name in PRICE_FIELDS},
                gpu_second_prices=cleaned.get("gpu_second_prices") or None,
            )
        except ApplicationError as exc:
            targets = [name for name in exc.fields if name in self.fields]
            if not targets:
                raise forms.ValidationError(exc.message) from None
            for name in targets:
                for message in exc.fields[name]:
                    self.add_error(name, message)
        return cleaned

    def validate_unique(self) -> None:
        """The service's effective_from check covers (model, effective_from) with a clearer
        message than the constraint's."""


class PriceListImportForm(forms.Form):
    csv_file = forms.FileField(required=False, label="CSV file")
    csv_text = forms.CharField(
        required=False,
        label="or paste CSV",
        widget=forms.Textarea(attrs={"rows": 12, "cols": 120, "style": "font-family: monospace"}),
    )
    effective_from = forms.DateTimeField(
        help_text="When the new prices take effect (ISO 8601, e.g. 2026-01-01T00:00:00Z)."
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload = cleaned.get("csv_file")
        if upload is not None:
            if upload.size > MAX_CSV_BYTES:
                raise forms.ValidationError("The file is larger than 1 MB.")
            try:
                cleaned["csv_text"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text.") from None
        if not (cleaned.get("csv_text") or "").strip():
            raise forms.ValidationError("Upload a CSV file or paste its content.")
        return cleaned


class PriceListConfirmForm(forms.Form):
    csv_text = forms.CharField(widget=forms.HiddenInput, strip=False)
    effective_from = forms.DateTimeField(widget=forms.HiddenInput)


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    form = PriceVersionForm
    list_display = [
        "model",
        "provider",
        "effective_from",
        *TOKEN_PRICE_FIELDS,
        "author",
        "created_at",
    ]
    list_filter = ["model__provider", "model__kind"]
    search_fields = ["model__name"]
    list_select_related = ["model__provider", "author"]
    date_hierarchy = "effective_from"
    ordering = ["model__provider__slug", "model__name", "-effective_from"]
    readonly_fields = ["author", "created_at"]

    @admin.display(ordering="model__provider__slug")
    def provider(self, obj: Price) -> str:
        return obj.model.provider.name

    # Append-only: no edit in place, no delete. A change is a new version (the add form).
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        source_id = request.GET.get("from_version", "")
        source = Price.objects.filter(pk=source_id).first() if source_id.isdigit() else None
        if source is not None:
            initial.update({name: getattr(source, name) for name in PRICE_FIELDS})
            initial["model"] = source.model_id
            initial["gpu_second_prices"] = source.gpu_second_prices
            initial.pop("from_version", None)
        initial["effective_from"] = timezone.now().replace(microsecond=0)
        return initial

    def save_model(self, request: HttpRequest, obj: Price, form: Any, change: bool) -> None:
        data = form.cleaned_data
        created = services.price_version_create(
            model=data["model"],
            effective_from=data["effective_from"],
            author=request.user,
            gpu_second_prices=data.get("gpu_second_prices") or None,
            note=data.get("note", ""),
            **{name: data.get(name) for name in PRICE_FIELDS},
        )
        # The admin logs and redirects with `obj`: make it the row the service created.
        obj.pk, obj.author, obj.created_at = created.pk, created.author, created.created_at

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        price = Price.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        extra = {**(extra_context or {})}
        if price is not None and self.has_add_permission(request):
            extra["new_version_url"] = _new_version_url(price.model_id, price)
        return super().change_view(request, object_id, form_url, extra_context=extra)

    # ---- CSV export / import ---------------------------------------------------------------

    def get_urls(self) -> list:
        own = [
            path(
                "import-csv/",
                self.admin_site.admin_view(self.import_csv_view),
                name="pricing_price_import_csv",
            ),
            path(
                "export-csv/",
                self.admin_site.admin_view(self.export_csv_view),
                name="pricing_price_export_csv",
            ),
        ]
        return own + super().get_urls()

    def export_csv_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        response = HttpResponse(
            selectors.price_list_export(at=now), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="prices-{now:%Y%m%d-%H%M}.csv"'
        return response

    def import_csv_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import a price list (CSV)",
            "columns": ",".join(("provider", "model", *PRICE_FIELDS)),
        }
        if request.method != "POST":
            initial = {"effective_from": timezone.now().replace(microsecond=0)}
            context["form"] = PriceListImportForm(initial=initial)
            return TemplateResponse(request, "admin/pricing/price/import_csv.html", context)

        if "apply" in request.POST:
            confirm = PriceListConfirmForm(request.POST)
            if not confirm.is_valid():
                messages.error(request, "The confirmation was incomplete; preview again.")
                return redirect("admin:pricing_price_import_csv")
            csv_text = confirm.cleaned_data["csv_text"]
            effective_from = confirm.cleaned_data["effective_from"]
            try:
                created = services.price_list_apply(
                    csv_text=csv_text, effective_from=effective_from, author=request.user
                )
            except ApplicationError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(
                    request,
                    f"Imported the price list: {len(created)} new price version(s) from "
                    f"{effective_from.isoformat()}.",
                )
                return redirect("admin:pricing_price_changelist")
            form = PriceListImportForm(
                initial={"csv_text": csv_text, "effective_from": effective_from}
            )
        else:
            form = PriceListImportForm(request.POST, request.FILES)
            if not form.is_valid():
                context["form"] = form
                return TemplateResponse(request, "admin/pricing/price/import_csv.html", context)
            csv_text = form.cleaned_data["csv_text"]
            effective_from = form.cleaned_data["effective_from"]

        preview = services.price_list_preview(csv_text=csv_text, effective_from=effective_from)
        context.update(
            form=form,
            preview=preview,
            changes=[
                {
                    "line": row.line,
                    "model": row.model,
                    "is_new": row.current is None,
                    "diffs": [
                        (
                            name,
                            _usd(getattr(row.current, name) if row.current else None),
                            _usd(row.values[name]),
                        )
                        for name in row.changed_fields
                    ],
                }
                for row in preview.changes
            ],
            confirm_form=PriceListConfirmForm(
                initial={"csv_text": csv_text, "effective_from": effective_from.isoformat()}
            ),
        )
        return TemplateResponse(request, "admin/pricing/price/import_csv.html", context)
