"""Shared fixtures; the test data itself lives in factory.py."""

import pytest

from coercion import Keys
from coercion.engine.quiet import quiet_pydicom

from factory import SECRET

quiet_pydicom()


@pytest.fixture
def keys() -> Keys:
    return Keys(SECRET)


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL server (tests/pgcluster.py); skipped where Debian's postgresql
    is not installed, except on CI, where plugin/scripts/test.sh installs it."""
    import os

    from pgcluster import PostgresCluster, binaries

    if binaries() is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed (plugin/scripts/test.sh installs it)")
    cluster = PostgresCluster()
    yield cluster
    cluster.stop()


_DATABASES = iter(range(1, 1 << 30))


@pytest.fixture
def pg_database(postgres):
    """A new, empty database of the throw-away server: (URL, password file)."""
    return postgres.create_database(f"test_{next(_DATABASES)}"), str(postgres.password_file)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Where a store under test lives, on each backend: (location, password file or None)."""
    if request.param == "sqlite":
        return tmp_path / "store.sqlite", None
    return request.getfixturevalue("pg_database")


PLATFORM_TESTS = "tests/test_platforms.py"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """The platform tests last: they wait for runs that go on beside every other test."""
    items.sort(key=lambda item: item.nodeid.startswith(PLATFORM_TESTS))


def pytest_collection_finish(session):
    """Start the platform runs (tests/platforms.py) as soon as their tests are known: they take
    minutes, mostly waiting on the network and the disk, and run beside the rest of the suite."""
    import tempfile
    from pathlib import Path

    import platforms

    wanted = {item.callspec.params.get("release") for item in session.items
              if item.nodeid.startswith(PLATFORM_TESTS) and hasattr(item, "callspec")}
    wanted &= set(platforms.CHOSEN)
    if wanted and platforms.available() is None:
        platforms.start_runs(sorted(wanted), Path(tempfile.mkdtemp(prefix="coercion-platforms-")))


def pytest_sessionfinish(session):
    import platforms

    platforms.stop_runs()
