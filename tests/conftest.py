"""Shared fixtures; the test data itself lives in factory.py."""

import pytest

from coercion import Keys
from coercion.engine.quiet import quiet_pydicom

from factory import SECRET

quiet_pydicom()


@pytest.fixture
def keys() -> Keys:
    return Keys(SECRET)
