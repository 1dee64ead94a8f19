from django.urls import path

from .api import AuditListApi, MeGetApi

urlpatterns = [
    path("me", MeGetApi.as_view(), name="api-me"),
    path("audit", AuditListApi.as_view(), name="api-audit"),
]
