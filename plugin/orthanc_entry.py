"""The script Orthanc's Python plugin loads (``"PythonScript"`` in orthanc.json).

It makes the embedded interpreter (Debian's /usr/bin/python3.11) see the project's virtual
environment, then registers the coercion callbacks. ``coercion serve`` also sets PYTHONPATH;
this keeps a plain ``Orthanc orthanc.json`` working from a checkout.
"""

import os
import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
_venv = Path(os.environ.get("COERCION_VENV") or _here.parent / ".venv")
for _path in [*_venv.glob("lib/python3*/site-packages"), _here]:
    if str(_path) not in sys.path:
        sys.path.append(str(_path))

from coercion import orthanc_plugin  # noqa: E402

orthanc_plugin.start()
