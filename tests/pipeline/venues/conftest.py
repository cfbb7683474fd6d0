import pytest

from tests.pipeline.venues.loopback import loopback_server


@pytest.fixture(scope="package")
def server():
    """One loopback Binance for the package's tests (each test's orders carry its own run's client id prefix)."""
    with loopback_server() as s:
        yield s
