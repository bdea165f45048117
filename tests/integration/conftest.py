"""What every integration test shares: no Orthanc or peer outlives the session."""

import pytest

from orthanc_server import stop_leftovers


@pytest.fixture(scope="session", autouse=True)
def no_leftover_processes():
    yield
    stop_leftovers()
