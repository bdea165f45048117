"""Tesseract through either tesserocr: the one built against Debian's Tesseract (the set-up's),
and PyPI's binary wheel, which bundles a Tesseract of its own and no language data (as plain
`pip install` brings it, in the Docker image). Both find Debian's English model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "plugin"
DEBIAN_MODEL = sorted(Path("/usr/share/tesseract-ocr").glob("*/tessdata/eng.traineddata"))
pytestmark = pytest.mark.skipif(not DEBIAN_MODEL and not os.environ.get("CI"),
                                reason="Debian's tesseract-ocr-eng is installed by plugin/scripts/test.sh")

SCRIPT = r"""
import sys
import numpy as np
from PIL import Image, ImageDraw, ImageFont
import tesserocr
from coercion.engine.pixels.text import _new_engine

print("module", tesserocr.__file__)
engine = _new_engine()
picture = Image.new("L", (420, 80), 255)
ImageDraw.Draw(picture).text((10, 20), "DOE JOHN 1234", fill=0,
                             font=ImageFont.truetype("DejaVuSans.ttf", 28))
engine.SetImage(picture)
print("text", engine.GetUTF8Text().strip())
"""


def read_text(env_path: str) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TESSDATA_PREFIX"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env_path, str(PLUGIN)) if p)
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    found = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    return found["module"], found["text"]


def test_the_tesserocr_of_the_set_up_reads_text():
    module, text = read_text("")
    assert "DOE JOHN 1234" in text


def test_pypis_tesserocr_wheel_finds_debians_model(tmp_path):
    target = tmp_path / "wheel"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
                              "--target", str(target), "tesserocr"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    module, text = read_text(str(target))
    assert module.startswith(str(target))  # the wheel, not the set-up's build
    assert "DOE JOHN 1234" in text
