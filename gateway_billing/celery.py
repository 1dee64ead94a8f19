import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_billing.settings.main")

app = Celery("gateway_billing")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
