"""Public pages of the catalog: the pricing page and its calculator."""

from django.urls import path

from . import views

app_name = "pricing"
urlpatterns = [
    path("pricing/", views.pricing_page, name="pricing"),
    path("pricing/estimate/", views.pricing_estimate, name="estimate"),
]
