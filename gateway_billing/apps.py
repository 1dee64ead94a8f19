from django.apps import AppConfig


class GatewayBillingConfig(AppConfig):
    name = "gateway_billing"
    verbose_name = "gateway_billing"

    def ready(self) -> None:
        from celery import signals
        from django.core.signals import request_finished

        from . import logs, metrics

        request_finished.connect(logs.request_done, weak=False)
        # weak=False: the receivers are module functions, kept alive anyway.
        signals.task_prerun.connect(logs.task_started, weak=False)
        signals.task_postrun.connect(logs.task_finished, weak=False)
        signals.task_failure.connect(metrics.task_failed, weak=False)
