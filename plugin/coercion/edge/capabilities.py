"""What the running Orthanc and its Python plugin offer, probed once at start-up.

Sites run Orthanc 1.10 (orthanc-python 4.0) to 1.13 (7.1); the SDK grows with each. The edge
asks the ``orthanc`` module what it has (``hasattr``, never a version string alone) and keeps
the answers here, for the callbacks to consult and for the log to say.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orthanc


@dataclass(frozen=True)
class Capabilities:
    # orthanc-python 7.0 (SDK 1.12.10): C-FIND, worklist and C-MOVE callbacks that receive the
    # DICOM connection (the caller's AE title, its IP address, the called AE title).
    find_with_connection: bool = False
    worklist_with_connection: bool = False
    move_with_connection: bool = False
    # orthanc-python 4.2: a C-MOVE callback in Orthanc's four parts (the number of
    # sub-operations known before they run).
    move_with_suboperations: bool = False
    # orthanc-python 4.3: "Python": {"AllowThreads": true} lets other Python threads run while
    # a callback waits on Orthanc (configured, and read by this plugin release).
    allow_threads: bool = False

    def summary(self) -> str:
        found = [name for name, value in asdict(self).items() if value is True]
        missing = [name for name, value in asdict(self).items() if value is False]
        return f"SDK features found: {', '.join(found) or 'none'}; absent: {', '.join(missing) or 'none'}"


def probe(config: dict) -> Capabilities:
    """Called while the plugin initializes (Orthanc's REST API does not answer yet)."""
    python = config.get("Python") if isinstance(config.get("Python"), dict) else {}
    # AllowThreads is an option, not a function: the plugin has no way to say it reads it. It
    # came with 4.3, after the move callback in four parts (4.2): Debian ships 4.0, 5.0 and
    # 7.1, Ubuntu 24.04 4.1, so that function tells them apart.
    allow_threads = python.get("AllowThreads") is True and hasattr(orthanc, "RegisterMoveCallback2")
    return Capabilities(
        find_with_connection=hasattr(orthanc, "RegisterFindCallback2"),
        worklist_with_connection=hasattr(orthanc, "RegisterWorklistCallback2"),
        move_with_connection=hasattr(orthanc, "RegisterMoveCallback3"),
        move_with_suboperations=hasattr(orthanc, "RegisterMoveCallback2"),
        allow_threads=allow_threads,
    )
