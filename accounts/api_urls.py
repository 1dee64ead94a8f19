from django.urls import path

from .api import MeGetApi

urlpatterns = [
    path("me", MeGetApi.as_view(), name="api-me"),
]
