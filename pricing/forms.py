"""The pricing calculator's form: a GET form, so a result is a link and works without JS."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from .calculator import Workload
from .selectors import CatalogEntry, PriceBook

# Generous bounds: the largest context windows are a few million tokens per request, and a
# billion requests a month is about 400 a second. Beyond them an estimate means nothing.
MAX_TOKENS_PER_REQUEST = 10_000_000
MAX_REQUESTS_PER_MONTH = 1_000_000_000


def _count(label: str, *, maximum: int, minimum: int = 0, initial: int) -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        min_value=minimum,
        max_value=maximum,
        initial=initial,
        error_messages={
            "required": f"Enter the {label.lower()}.",
            "invalid": f"The {label.lower()} must be a whole number.",
            "min_value": f"The {label.lower()} cannot be "
            + ("negative." if minimum == 0 else f"below {minimum}."),
            "max_value": f"The {label.lower()} can be at most {maximum:,}.",
        },
    )


class CalculatorForm(forms.Form):
    # A select, validated here against the priced models so an error can say what is wrong.
    model = forms.CharField(
        label="Model", widget=forms.Select, error_messages={"required": "Choose a model."}
    )
    input_tokens = _count("Input tokens per request", maximum=MAX_TOKENS_PER_REQUEST, initial=1000)
    output_tokens = _count("Output tokens per request", maximum=MAX_TOKENS_PER_REQUEST, initial=500)
    cached_share = forms.DecimalField(
        label="Cached share of the input (%)",
        min_value=Decimal(0),
        max_value=Decimal(100),
        max_digits=5,
        decimal_places=2,
        initial=Decimal(0),
        help_text="The part of the input tokens read from the provider's prompt cache.",
        error_messages={
            "required": "Enter the cached share (0 to 100).",
            "invalid": "The cached share must be a number from 0 to 100.",
            "min_value": "The cached share cannot be negative.",
            "max_value": "The cached share cannot be more than 100 %%.",
            "max_digits": "The cached share must be a number from 0 to 100.",
            "max_whole_digits": "The cached share cannot be more than 100 %%.",
            "max_decimal_places": "The cached share has at most 2 decimal places.",
        },
    )
    requests = _count(
        "Requests per month", maximum=MAX_REQUESTS_PER_MONTH, minimum=1, initial=10_000
    )

    def __init__(self, *args: Any, book: PriceBook, priced: list[CatalogEntry], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.book = book
        self.priced = {entry.model.name: entry for entry in priced}
        groups: dict[str, list[tuple[str, str]]] = {}
        for entry in priced:  # the API name: what a client sends in its usage events
            groups.setdefault(entry.model.provider_name, []).append(
                (entry.model.name, entry.model.name)
            )
        self.fields["model"].widget.choices = [("", "Choose a model"), *groups.items()]
        self.fields["model"].initial = "gpt-5" if "gpt-5" in self.priced else ""
        for name in ("input_tokens", "output_tokens", "requests"):
            self.fields[name].widget.attrs["inputmode"] = "numeric"
        self.fields["cached_share"].widget.attrs.update(step="0.01", inputmode="decimal")

    def clean_model(self) -> str:
        name = self.cleaned_data["model"]
        if name not in self.priced:
            raise forms.ValidationError(self._model_error(name), code="unknown_model")
        return name

    def _model_error(self, name: str) -> str:
        shown = name if len(name) <= 80 else name[:80] + "…"
        if self.book.model(name=name) is not None:
            return f"{shown} has no price yet, so its cost cannot be estimated."
        return f"Unknown model “{shown}”. Choose a model from the list."

    @property
    def entry(self) -> CatalogEntry:
        return self.priced[self.cleaned_data["model"]]

    @property
    def workload(self) -> Workload:
        data = self.cleaned_data
        return Workload(
            input_tokens=data["input_tokens"],
            output_tokens=data["output_tokens"],
            cached_share=data["cached_share"],
            requests=data["requests"],
        )
