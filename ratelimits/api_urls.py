from django.urls import path

from . import api

urlpatterns = [
    path("authorize", api.AuthorizeApi.as_view(), name="authorize"),
    path("authorize/<str:request_id>/release", api.HoldReleaseApi.as_view(), name="hold-release"),
]
