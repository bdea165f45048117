"""The script Orthanc's Python plugin loads (``"PythonScript"`` in orthanc.json).

It makes the embedded interpreter (Debian's /usr/bin/python3.11) see the project's virtual
environment, then registers the coercion callbacks. ``coercion serve`` also sets PYTHONPATH;
this keeps a plain ``Orthanc orthanc.json`` working from a checkout.
"""

import os
import site
import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
_venv = Path(os.environ.get("COERCION_VENV") or _here.parent / ".venv")
# Only the site-packages built for this interpreter: compiled parts of another version's
# packages would not load.
_site = _venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
if _venv.is_dir() and not _site.is_dir():
    print(f"coercion: {_venv} holds no packages for Python {sys.version_info.major}.{sys.version_info.minor}, "
          "the interpreter Orthanc embeds; build it with that interpreter", file=sys.stderr)
if _site.is_dir():
    site.addsitedir(str(_site))  # also reads its .pth files (an editable install is one)
if str(_here) not in sys.path:
    sys.path.append(str(_here))

from coercion.edge import startup  # noqa: E402

startup.start()
