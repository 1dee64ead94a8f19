from django.contrib import admin

from .models import TeamTpmOverride, TpmLimit
from .selectors import limits_changed


class _BumpsLimits(admin.ModelAdmin):
    """Edits reach the gate of every process within a second."""

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        limits_changed()

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        limits_changed()

    def delete_queryset(self, request, queryset) -> None:
        super().delete_queryset(request, queryset)
        limits_changed()


@admin.register(TpmLimit)
class TpmLimitAdmin(_BumpsLimits):
    list_display = ["model", "provider", "plan", "tokens_per_minute", "updated_at"]
    list_editable = ["tokens_per_minute"]
    list_filter = ["plan", "model__provider"]
    search_fields = ["model__name"]
    list_select_related = ["plan", "model__provider"]
    list_per_page = 200
    ordering = ["model__provider__slug", "model__name", "plan__sort_order"]

    @admin.display(ordering="model__provider__slug")
    def provider(self, obj: TpmLimit) -> str:
        return obj.model.provider.name


@admin.register(TeamTpmOverride)
class TeamTpmOverrideAdmin(_BumpsLimits):
    list_display = ["team", "model", "provider", "tokens_per_minute", "note", "updated_at"]
    list_filter = ["model__provider"]
    search_fields = ["model__name", "team__slug", "team__name"]
    list_select_related = ["team", "model__provider"]
    raw_id_fields = ["team"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(ordering="model__provider__slug")
    def provider(self, obj: TeamTpmOverride) -> str:
        return obj.model.provider.name
