"""Which text detector Clean Pixel Data uses: Tesseract in-process (tesserocr, ours), Tesseract
as a program (pytesseract), and a detector whose model ships in its PyPI wheel (RapidOCR's
PP-OCRv4 detection, ONNX Runtime), on the benchmark's 640x480 ultrasound images.

    python -m venv /tmp/cmp && /tmp/cmp/bin/pip install pytesseract rapidocr-onnxruntime
    .venv/bin/python bench/compare_text_detectors.py --peers /tmp/cmp

The peers are never dependencies of the project: --peers names a virtual environment that holds
them (its site-packages is appended to the path). Each detector finds the text lines of the
same 20 images; reported: milliseconds per image (median of 3 rounds) and the share of the
text's pixels inside the boxes it found (recall, what matters for masking).
"""

from __future__ import annotations

import argparse
import glob
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugin"), str(REPO / "tests")]

import pixelimages as pi  # noqa: E402


def images(count: int = 20):
    faces = sorted(pi.FONTS)
    return [pi.burned_in(pi.ultrasound(seed=i), face=faces[i % len(faces)], size=12 + 2 * (i % 5))
            for i in range(count)]


def ours(picture):
    from coercion.engine.pixels.boxes import joined_lines
    from coercion.engine.pixels.cleaner import grown
    from coercion.engine.pixels.text import find_text_finder, foreground

    mask = foreground([picture])
    boxes = grown(joined_lines(find_text_finder().lines(mask)), mask.any(axis=0))
    return [(b.x, b.y, b.x + b.w, b.y + b.h) for b in boxes]


def tesseract_program(picture):
    import pytesseract
    from PIL import Image

    from coercion.engine.pixels.text import foreground

    boxes = []
    for plane in foreground([picture]):  # the same picture of sharp features as ours
        image = Image.fromarray(np.where(plane, 0, 255).astype(np.uint8))
        image = image.resize((image.width * 2, image.height * 2), Image.NEAREST)
        data = pytesseract.image_to_data(image, config="--psm 11", output_type=pytesseract.Output.DICT)
        for level, x, y, w, h in zip(data["level"], data["left"], data["top"], data["width"], data["height"]):
            if level == 4:  # text lines
                boxes.append((x // 2, y // 2, (x + w + 1) // 2, (y + h + 1) // 2))
    return boxes


_RAPID = []


def rapidocr_detection(picture):
    if not _RAPID:
        from rapidocr_onnxruntime import RapidOCR

        _RAPID.append(RapidOCR())
    result, _ = _RAPID[0](np.stack([picture] * 3, axis=-1), use_det=True, use_cls=False, use_rec=False)
    boxes = []
    for quad in result or []:
        quad = np.asarray(quad)
        boxes.append((int(quad[:, 0].min()), int(quad[:, 1].min()), int(quad[:, 0].max()) + 1,
                      int(quad[:, 1].max()) + 1))
    return boxes


def recall(picture: pi.Picture, boxes) -> float:
    covered = np.zeros(picture.text_mask.shape, bool)
    for x0, y0, x1, y1 in boxes:
        covered[max(y0, 0):y1, max(x0, 0):x1] = True
    return float(covered[picture.text_mask].mean())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", required=True, help="a virtual environment holding the peers")
    args = parser.parse_args()
    sys.path += glob.glob(f"{args.peers}/lib/python3*/site-packages")
    pictures = images()
    detectors = {"tesserocr, layout analysis (ours)": ours, "pytesseract (a process per call)": tesseract_program,
                 "RapidOCR PP-OCRv4 detection (ONNX, model in the wheel)": rapidocr_detection}
    for detect in detectors.values():  # warm up
        detect(pictures[0].pixels)
    times = {name: [] for name in detectors}
    recalls = {name: [] for name in detectors}
    for round_ in range(3):
        for name, detect in detectors.items():
            started = time.perf_counter()
            found = [detect(p.pixels) for p in pictures]
            times[name].append((time.perf_counter() - started) / len(pictures) * 1000)
            if round_ == 0:
                recalls[name] = [recall(p, boxes) for p, boxes in zip(pictures, found)]
    print("| detector | ms per image (median of 3) | text pixels inside its boxes (mean, worst image) |")
    print("| --- | ---: | --- |")
    for name in detectors:
        print(f"| {name} | {statistics.median(times[name]):.0f} | {statistics.mean(recalls[name]):.3f}, "
              f"{min(recalls[name]):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
