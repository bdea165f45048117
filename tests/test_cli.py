"""The batch CLI: coercion deidentify."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from coercion import Keys

from factory import SECRET, encode, make_ct

COERCION = [sys.executable, "-m", "coercion.cli"]


def cli(*args, env=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("COERCION_")}
    environment.update(env or {})
    return subprocess.run([*COERCION, *map(str, args)], capture_output=True, text=True, env=environment)


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "site.key"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "in"
    (root / "study1" / "series1").mkdir(parents=True)
    (root / "study2").mkdir()
    for i in range(3):
        data = encode(make_ct(sop_uid=f"1.2.3.1.{i}"))
        (root / "study1" / "series1" / f"IM{i:04d}").write_bytes(data)  # no .dcm: recognised by content
    (root / "study2" / "ct.dcm").write_bytes(encode(make_ct(patient_id="OTHER", sop_uid="1.2.3.2.1")))
    (root / "study2" / "notes.txt").write_text("not dicom at all\n")
    truncated = Path(get_testdata_file("MR_truncated.dcm")).read_bytes()
    (root / "study2" / "broken.dcm").write_bytes(truncated)
    return root


def test_folder_in_same_relative_paths_out(tree, secret_file, tmp_path):
    out = tmp_path / "out"
    result = cli("deidentify", "--uri", "deidentify:RetainPatientIDHashOption", "--secret-file", secret_file,
                 tree, "--out", out, "--jobs", "2")
    assert result.returncode == 1  # broken.dcm failed (notes.txt is skipped)
    for i in range(3):
        ds = pydicom.dcmread(out / "study1" / "series1" / f"IM{i:04d}")
        assert ds.PatientID == Keys(SECRET).patient_id("MRN0012345", "HOSPITAL_A")
        assert ds.SOPInstanceUID == Keys(SECRET).uid(f"1.2.3.1.{i}")
    assert (out / "study2" / "ct.dcm").exists()
    assert not (out / "study2" / "notes.txt").exists() and not (out / "study2" / "broken.dcm").exists()
    lines = result.stderr.splitlines()
    assert any("notes.txt" in line and "skipped: not a DICOM file" in line for line in lines)
    assert any("broken.dcm" in line and "truncated" in line for line in lines)
    summary = lines[-1]
    assert "4 files de-identified" in summary and "1 failed, 1 skipped" in summary and " s " in summary and "MB" in summary


def test_files_that_are_not_dicom_are_skipped_unless_strict(tmp_path, secret_file):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(encode(make_ct()))
    (folder / "README.txt").write_text("not dicom\n")
    result = cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, folder, "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr  # every DICOM file succeeded
    assert "0 failed, 1 skipped" in result.stderr.splitlines()[-1]
    strict = cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, folder, "--out", tmp_path / "p",
                 "--strict")
    assert strict.returncode == 1 and "1 failed, 0 skipped" in strict.stderr.splitlines()[-1]


def test_success_exits_zero_and_inputs_stay_untouched(tmp_path, secret_file):
    src = tmp_path / "a.dcm"
    src.write_bytes(encode(make_ct()))
    before = src.read_bytes()
    result = cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, src, "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert src.read_bytes() == before
    assert pydicom.dcmread(tmp_path / "o" / "a.dcm").PatientName == ""
    assert "1 files de-identified" in result.stderr and "0 failed" in result.stderr


def test_runs_are_identical(tmp_path, secret_file, tree):
    outs = []
    for name, jobs in (("o1", "1"), ("o2", "2")):
        cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, tree, "--out", tmp_path / name, "-j", jobs)
        outs.append((tmp_path / name / "study1" / "series1" / "IM0001").read_bytes())
    assert outs[0] == outs[1]


def test_bad_uri_writes_nothing(tree, secret_file, tmp_path):
    result = cli("deidentify", "--uri", "deidentify:NoSuchOption", "--secret-file", secret_file, tree, "--out", tmp_path / "o")
    assert result.returncode == 2 and "NoSuchOption" in result.stderr
    assert not (tmp_path / "o").exists()


def test_missing_secret_writes_nothing(tree, tmp_path):
    result = cli("deidentify", "--uri", "deidentify:", tree, "--out", tmp_path / "o")
    assert result.returncode == 2 and "no site secret" in result.stderr
    result = cli("deidentify", "--uri", "deidentify:", "--secret-file", tmp_path / "nope", tree, "--out", tmp_path / "o")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "o").exists()


def test_secret_from_environment(tree, tmp_path):
    result = cli("deidentify", "--uri", "deidentify:", tree / "study2" / "ct.dcm", "--out", tmp_path / "o",
                 env={"COERCION_SECRET": SECRET.decode()})
    assert result.returncode == 0, result.stderr
    assert pydicom.dcmread(tmp_path / "o" / "ct.dcm").SOPInstanceUID == Keys(SECRET).uid("1.2.3.2.1")


def test_no_phi_in_the_output_of_the_command(tree, secret_file, tmp_path):
    result = cli("deidentify", "--uri", "deidentify:", "--secret-file", secret_file, tree, "--out", tmp_path / "o")
    for phi in ("MRN0012345", "Doe", "Johnathan", SECRET.decode()):
        assert phi not in result.stderr + result.stdout


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_long_runs_on_a_terminal_only(monkeypatch):
    from coercion import cli as cli_module

    monkeypatch.setattr(cli_module, "PROGRESS_DELAY", 0.0)
    terminal = FakeTerminal()
    with cli_module._progress(10, quiet=False, stream=terminal) as bar:
        bar.update(5)
        bar.refresh()
    assert "5/10" in terminal.getvalue() or "10/10" in terminal.getvalue()
    pipe = io.StringIO()
    with cli_module._progress(10, quiet=False, stream=pipe) as bar:
        bar.update(10)
    assert pipe.getvalue() == ""
    with cli_module._progress(10, quiet=True, stream=terminal) as bar:
        assert bar.disable
