"""Clean Pixel Data benchmark: single-frame ultrasound images per second with full OCR, frames
per second on a 100-frame cine loop, and what the option costs images that need no cleaning.

    .venv/bin/python bench/run_pixel_bench.py [--rounds 5]

In one process (the project's .venv: Tesseract through tesserocr), on images made by
tests/pixelimages.py: 640x480 8-bit ultrasound frames with a name, an ID, a birth date and a
hospital name burned in, in five fonts at 12 to 20 pixels. Cases run in interleaved rounds (the
machine is noisy); the medians of the rounds are reported, and the ratio of the option's cost
on images it leaves alone. Everything is in memory (deidentify_bytes): what is measured is the
cleaning, not the disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import pixelimages as pi  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit  # noqa: E402

from coercion import Deidentifier, Keys  # noqa: E402
from coercion.engine.pixels.settings import PixelSettings  # noqa: E402

FACES = sorted(pi.FONTS)


def single_frames(count: int = 20) -> list[bytes]:
    return [pi.encode(pi.dataset([pi.burned_in(pi.ultrasound(seed=i), face=FACES[i % len(FACES)],
                                               size=12 + 2 * (i % 5)).pixels])) for i in range(count)]


def cine(frames: int = 100, rgb: bool = False, jpeg: bool = False) -> bytes:
    """tests/pixelimages.py's cine loop: fixed text, a clock that ticks every 10 frames, a name
    in frames 60 to 69 only."""
    pictures = [p.pixels for p in pi.cine(frames, rgb=rgb, name_in=range(60, 70))]
    syntax = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    return pi.encode(pi.dataset(pictures, pi.US_MULTIFRAME, syntax=syntax))


def ct_images(count: int = 20) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [pi.encode(pi.dataset([rng.integers(0, 4096, (512, 512), dtype=np.uint16)], pi.CT_IMAGE,
                                 BitsStored=12, HighBit=11)) for _ in range(count)]


def timed(deid: Deidentifier, items: list[bytes]) -> float:
    started = time.perf_counter()
    for data in items:
        deid.deidentify_bytes(data)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    keys = Keys(os.urandom(32))
    clean = Deidentifier("deidentify:CleanPixelDataOption", keys)
    identifying = Deidentifier("deidentify:CleanPixelDataOption", keys, pixels=PixelSettings(text="identifying"))
    basic = Deidentifier("deidentify:", keys)

    singles = single_frames()
    loops = {"grey native": cine(), "RGB JPEG Baseline": cine(rgb=True, jpeg=True)}
    cts = ct_images()
    # Warm up: Tesseract's engines, pydicom's handlers.
    timed(clean, singles[:2])
    timed(identifying, singles[:1])
    timed(basic, cts[:2])

    cases = {
        "single frame, every text (default)": (clean, singles, len(singles)),
        "single frame, identifying text only": (identifying, singles[:8], 8),
        **{f"100-frame cine, {name}": (clean, [data], 100) for name, data in loops.items()},
        "CT 512x512, no option": (basic, cts, len(cts)),
        "CT 512x512, CleanPixelDataOption": (clean, cts, len(cts)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.rounds):
        # Every other round in the reverse order: a case never always follows the same one.
        order = list(cases.items()) if round_ % 2 == 0 else list(cases.items())[::-1]
        for name, (deid, items, _) in order:
            seconds[name].append(timed(deid, items))

    print(f"{platform.node()} {platform.python_version()} {os.cpu_count()} cores, {args.rounds} interleaved rounds")
    print("| case | per second (median) | rounds (per second) |")
    print("| --- | ---: | --- |")
    rates = {}
    for name, (_, _, units) in cases.items():
        per_round = [units / s for s in seconds[name]]
        rates[name] = statistics.median(per_round)
        unit = "frames" if "cine" in name else "images"
        print(f"| {name} | {rates[name]:.1f} {unit} | {', '.join(f'{r:.1f}' for r in per_round)} |")
    ratios = [a / b for a, b in zip(seconds["CT 512x512, CleanPixelDataOption"], seconds["CT 512x512, no option"])]
    print(f"\nCT with the option / without, per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
