from django.urls import path

from .api import ModelListApi

urlpatterns = [
    path("models", ModelListApi.as_view(), name="models-list"),
]
