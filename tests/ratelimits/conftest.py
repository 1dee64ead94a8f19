import pytest

from ratelimits import selectors, services


@pytest.fixture(autouse=True)
def _fresh_gate():
    services.gate_reset()
    selectors.limits_forget()
    yield
    services.gate_reset()
    selectors.limits_forget()
