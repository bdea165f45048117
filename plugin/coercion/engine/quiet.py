"""Keep attribute values out of logs: pydicom's validation warnings quote the values they reject."""

from __future__ import annotations

import logging
import warnings


def quiet_pydicom() -> None:
    """Silence pydicom's value-quoting warnings and log lines in this process."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
