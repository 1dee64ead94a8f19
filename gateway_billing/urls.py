from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import health, metrics

handler404 = "gateway_billing.errors.handler404"
handler500 = "gateway_billing.errors.handler500"

# The hot paths (authorize, usage) first: every request walks the list in order.
api_v1 = [
    path("", include("ratelimits.api_urls")),
    path("", include("ledger.api_urls")),
    path("", include("pricing.api_urls")),
    path("", include("accounts.api_urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("pricing.urls")),
    path("", include("ledger.urls")),
    path("", include("accounts.urls")),
]
