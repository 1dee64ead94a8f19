"""Loading the catalog file: create what is missing, never change what exists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Plan
from gateway_billing.errors import ApplicationError
from ratelimits.models import TpmLimit

from ..models import Model, ModelKind, Price, Provider
from ..selectors import PRICE_FIELDS
from .versions import catalog_version_bump, clean_values, price_version_create


@dataclass
class CatalogLoadResult:
    plans: int = 0
    providers: int = 0
    models: int = 0
    prices: int = 0
    tpm_limits: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def created(self) -> int:
        return self.plans + self.providers + self.models + self.prices + self.tpm_limits


def _invalid(message: str) -> ApplicationError:
    return ApplicationError("invalid_catalog", message)


def _load_plans(entries: list[dict[str, Any]], result: CatalogLoadResult) -> None:
    existing = set(Plan.objects.values_list("code", flat=True))
    for entry in entries:
        if entry["code"] in existing:
            continue  # admins edit plans; the file never overwrites them
        try:
            plan = Plan(**entry)
        except TypeError as exc:
            raise _invalid(f"plan {entry.get('code')!r}: {exc}") from None
        try:
            plan.full_clean()
        except ValidationError as exc:
            raise _invalid(f"plan {entry['code']!r}: {exc.messages}") from None
        plan.save()
        result.plans += 1


def _load_models(
    providers: list[dict[str, Any]], models: list[dict[str, Any]], result: CatalogLoadResult
) -> dict[str, Model]:
    by_slug = {provider.slug: provider for provider in Provider.objects.all()}
    for entry in providers:
        if entry["slug"] not in by_slug:
            by_slug[entry["slug"]] = Provider.objects.create(slug=entry["slug"], name=entry["name"])
            result.providers += 1
    by_name = {model.name: model for model in Model.objects.select_related("provider")}
    for entry in models:
        name, slug = entry["name"], entry["provider"]
        if slug not in by_slug:
            raise _invalid(f"model {name!r}: unknown provider {slug!r}")
        if entry.get("kind", ModelKind.CHAT) not in ModelKind.values:
            raise _invalid(f"model {name!r}: unknown kind {entry['kind']!r}")
        existing = by_name.get(name)
        if existing is not None:
            if existing.provider.slug != slug:
                result.warnings.append(
                    f"model {name}: exists under provider {existing.provider.slug}, "
                    f"the file says {slug}; left as is"
                )
            continue
        by_name[name] = Model.objects.create(
            provider=by_slug[slug],
            name=name,
            display_name=entry.get("display_name", ""),
            kind=entry.get("kind", ModelKind.CHAT),
        )
        result.models += 1
    return by_name


def _load_prices(
    entries: list[dict[str, Any]], models: dict[str, Model], result: CatalogLoadResult
) -> None:
    for entry in entries:
        model = models.get(entry["model"])
        if model is None:
            raise _invalid(f"price for unknown model {entry['model']!r}")
        effective_from = parse_datetime(entry["effective_from"])
        if effective_from is None or timezone.is_naive(effective_from):
            raise _invalid(f"price of {model.name}: effective_from needs an ISO time with zone")
        values = {name: entry.get(name) for name in PRICE_FIELDS}
        existing = Price.objects.filter(model=model, effective_from=effective_from).first()
        if existing is not None:
            try:
                wanted = clean_values(values)
            except ApplicationError as exc:
                raise _invalid(f"price of {model.name}: {exc.message}") from None
            if any(getattr(existing, name) != wanted[name] for name in PRICE_FIELDS):
                result.warnings.append(
                    f"price of {model.name} from {entry['effective_from']}: the stored version "
                    "differs from the file; prices are append-only, so it was left as is"
                )
            continue
        try:
            price_version_create(
                model=model,
                effective_from=effective_from,
                author=None,
                gpu_second_prices=entry.get("gpu_second_prices"),
                note="catalog",
                **values,
            )
        except ApplicationError as exc:
            if exc.code == "invalid_price":
                raise _invalid(f"price of {model.name}: {exc.message}") from None
            result.warnings.append(f"price of {model.name} skipped: {exc.message}")
            continue
        result.prices += 1


def _load_tpm_limits(
    entries: list[dict[str, Any]], models: dict[str, Model], result: CatalogLoadResult
) -> None:
    plans = {plan.code: plan for plan in Plan.objects.all()}
    existing = set(TpmLimit.objects.values_list("plan_id", "model_id"))
    missing = []
    for entry in entries:
        model = models.get(entry["model"])
        if model is None:
            raise _invalid(f"TPM limit for unknown model {entry['model']!r}")
        for code, tokens_per_minute in entry["limits"].items():
            plan = plans.get(code)
            if plan is None:
                result.warnings.append(f"TPM limit of {model.name} for unknown plan {code!r}")
                continue
            if not isinstance(tokens_per_minute, int) or tokens_per_minute < 0:
                raise _invalid(f"TPM limit of {model.name} / {code}: a whole number >= 0")
            if (plan.pk, model.pk) not in existing:
                missing.append(
                    TpmLimit(plan=plan, model=model, tokens_per_minute=tokens_per_minute)
                )
    TpmLimit.objects.bulk_create(missing)
    result.tpm_limits += len(missing)


@transaction.atomic
def catalog_load(*, data: Mapping[str, Any]) -> CatalogLoadResult:
    """Create whatever the catalog file has and the database lacks; change nothing else.

    Plans, providers, models and TPM limits that exist are left alone (admins edit them);
    price versions are keyed by (model, effective_from) and never modified.
    """
    if data.get("format") != 1:
        raise _invalid('unsupported catalog format; expected "format": 1')
    result = CatalogLoadResult()
    try:
        _load_plans(list(data.get("plans", [])), result)
        models = _load_models(list(data.get("providers", [])), list(data.get("models", [])), result)
        _load_prices(list(data.get("prices", [])), models, result)
        _load_tpm_limits(list(data.get("tpm_limits", [])), models, result)
    except KeyError as exc:
        raise _invalid(f"a catalog entry lacks the key {exc}") from None
    if result.created:
        catalog_version_bump()
    return result
