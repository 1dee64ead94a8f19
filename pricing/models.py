"""The price catalog: providers, models and versioned prices.

A price is never edited in place: a change is a new ``Price`` row with its own
``effective_from``. The database refuses UPDATE and DELETE on price rows.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Provider(models.Model):
    slug = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=64)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class ModelKind(models.TextChoices):
    CHAT = "chat", "Chat"
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"
    OTHER = "other", "Other"


class Model(models.Model):
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="models")
    name = models.CharField(max_length=128, unique=True)
    display_name = models.CharField(max_length=128, blank=True)
    kind = models.CharField(max_length=8, choices=ModelKind.choices, default=ModelKind.CHAT)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider__slug", "name"]

    def __str__(self) -> str:
        return self.name


def _usd(**kwargs):  # a USD price field; null means "not offered" (N/A in the seed)
    return models.DecimalField(max_digits=16, decimal_places=6, null=True, blank=True, **kwargs)


TOKEN_PRICE_FIELDS = ("input_per_1m", "cache_read_per_1m", "output_per_1m", "cache_write_per_1m")
UNIT_PRICE_FIELDS = (
    "per_image",
    "per_megapixel",
    "per_video_second",
    "per_video",
    "per_request",
)


class Price(models.Model):
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="prices")
    effective_from = models.DateTimeField()
    input_per_1m = _usd(help_text="USD per 1M input tokens")
    cache_read_per_1m = _usd(help_text="USD per 1M cache-read tokens; empty = N/A")
    output_per_1m = _usd(help_text="USD per 1M output tokens")
    cache_write_per_1m = _usd(help_text="USD per 1M cache-write tokens; empty = N/A")
    per_image = _usd()
    per_megapixel = _usd()
    per_video_second = _usd()
    per_video = _usd()
    per_request = _usd()
    # {"A100": "0.00111", "H100": "0.00195"}: USD per GPU second by machine type, decimal strings.
    gpu_second_prices = models.JSONField(default=dict, blank=True)
    note = models.CharField(max_length=200, blank=True)
    # PROTECT, not SET_NULL: price rows are append-only, so nothing may rewrite them later.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model_id", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="price_unique_model_effective_from"
            )
        ]
        indexes = [models.Index(fields=["model", "-effective_from"], name="price_model_eff_idx")]

    def __str__(self) -> str:
        return f"{self.model.name} from {self.effective_from:%Y-%m-%d %H:%M}"
