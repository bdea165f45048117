"""The package is whole: a wheel of the project, installed outside the checkout, de-identifies.

The wheel is built from a copy of the project's sources (an in-tree build would leave build/ in
the checkout, and reuse it), installed without its dependencies in a fresh venv of this
interpreter, which sees the dependencies this venv already has (a .pth naming its
site-packages) but not the checkout's plugin/ folder: what the engine needs at run time (the
standard's tables) must come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from factory import SECRET, encode, make_ct

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "plugin" / "coercion"
TABLES = ("confidentiality-profile.json", "iod-attribute-types.json", "safe-private-attributes.json")

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    venv, checkout, src, dst, secret = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    assert not any(Path(p or ".").resolve() == checkout / "plugin" for p in sys.path), sys.path

    import coercion
    from coercion import Deidentifier, Keys
    from coercion.engine import profile

    assert Path(coercion.__file__).resolve().is_relative_to(venv), coercion.__file__
    assert Path(str(profile.DEFAULT_TABLES)).resolve().is_relative_to(venv), profile.DEFAULT_TABLES
    outcome = Deidentifier("deidentify:", Keys(secret.encode())).deidentify_file(src, dst)
    print(coercion.__version__, outcome.patient_pseudonym)
""")


def _copy_sources(target: Path) -> Path:
    """What the wheel is built from: pyproject.toml, the README (the long description), plugin/."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "plugin", target / "plugin",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    return target


def _build_wheel(source: Path, dist: Path) -> Path:
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
               "-w", str(dist), str(source)]
    # The backend pyproject.toml names (setuptools>=77, in the test extras); without it in this
    # venv, pip fetches it into an isolated build environment.
    if int(version("setuptools").split(".")[0]) >= 77:
        command.insert(4, "--no-build-isolation")
    subprocess.run(command, check=True, cwd=source, timeout=120)
    (wheel,) = dist.glob("coercion-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    return _build_wheel(_copy_sources(root / "src"), root / "dist")


def test_the_wheel_holds_the_package_its_tables_and_the_admin_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"coercion/engine/tables/{name}" for name in TABLES} <= names
    ui = {f"coercion/edge/ui/{path.name}" for path in (PACKAGE / "edge" / "ui").iterdir() if path.is_file()}
    assert ui and ui <= names
    assert "coercion/py.typed" in names
    sources = {f"coercion/{path.relative_to(PACKAGE).as_posix()}" for path in PACKAGE.rglob("*.py")
               if "__pycache__" not in path.parts}
    assert sources <= names
    # The package and its metadata only (not plugin/tools, plugin/scripts).
    assert {name.split("/")[0] for name in names if not name.startswith("coercion-")} == {"coercion"}


def test_the_installed_wheel_deidentifies_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    assert not venv.resolve().is_relative_to(REPO)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                    "--no-deps", "--disable-pip-version-check", str(wheel)], check=True, timeout=120)
    # The dependencies: this venv's site-packages (a .pth names folders, its own .pth files are
    # not read: the checkout's editable install stays out), never the checkout's plugin/.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    visible = [p for p in site.getsitepackages() if not Path(p).resolve().is_relative_to(REPO / "plugin")]
    (Path(purelib) / "test-dependencies.pth").write_text("".join(f"{p}\n" for p in visible))

    src, dst = tmp_path / "ct.dcm", tmp_path / "out.dcm"
    src.write_bytes(encode(make_ct()))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COERCION_TABLES", "PYTHONHOME")}
    ran = subprocess.run([str(python), "-I", "-c", SCRIPT, str(venv.resolve()), str(REPO), str(src), str(dst),
                          SECRET.decode()], check=False, cwd=work, env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr

    import pydicom

    original, out = pydicom.dcmread(src), pydicom.dcmread(dst)
    assert out.PatientIdentityRemoved == "YES"
    assert out.PatientID != original.PatientID  # the basic profile empties it (Type 2 in a CT)
    assert out.PatientName != original.PatientName
    assert original.PatientID.encode() not in dst.read_bytes()


def test_a_folder_stands_in_for_the_packaged_tables(tmp_path):
    """Coercion.TablesDirectory (Settings.tables, passed to the Deidentifier): read instead of
    the package's own; a folder without them is refused by name."""
    from coercion import Deidentifier, Keys
    from coercion.engine.profile import DEFAULT_TABLES, TableError

    assert Path(str(DEFAULT_TABLES)) == PACKAGE / "engine" / "tables"
    for name in TABLES:
        shutil.copy2(PACKAGE / "engine" / "tables" / name, tmp_path / name)
    profile = tmp_path / "confidentiality-profile.json"
    profile.write_text(profile.read_text().replace('"edition": "', '"edition": "local copy of ', 1))
    deid = Deidentifier("deidentify:", Keys(SECRET), str(tmp_path))
    assert deid.profile.tables.edition.startswith("local copy of ")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TableError, match=f"{empty}/confidentiality-profile.json is missing"):
        Deidentifier("deidentify:", Keys(SECRET), str(empty))
