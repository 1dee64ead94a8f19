from django.contrib import admin

from .models import TeamTpmOverride, TpmLimit


@admin.register(TpmLimit)
class TpmLimitAdmin(admin.ModelAdmin):
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
class TeamTpmOverrideAdmin(admin.ModelAdmin):
    list_display = ["team", "model", "provider", "tokens_per_minute", "note", "updated_at"]
    list_filter = ["model__provider"]
    search_fields = ["model__name", "team__slug", "team__name"]
    list_select_related = ["team", "model__provider"]
    raw_id_fields = ["team"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(ordering="model__provider__slug")
    def provider(self, obj: TeamTpmOverride) -> str:
        return obj.model.provider.name
