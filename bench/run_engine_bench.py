"""Engine benchmark: the basic profile on a 300-instance 512x512 CT series, ours against the peers.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_engine_bench.py [--repeat 3]

Every tool reads the same files and writes its own output folder, in one process run, under
the interpreter that runs this script (the bench environment is built with Debian's
/usr/bin/python3.11, the interpreter Orthanc embeds). Each tool is warmed up on two files and
timed over the whole series; the best of --repeat runs counts. Files are read from and
written to a tmpfs (/dev/shm) so that what is compared is the de-identification, not the
disk's write-back (which on this machine varies by 2x from run to run); --on-disk writes
under bench/ instead, with the page cache flushed (sync) before every timed run.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from generate_ct import generate_ct_series  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


def tool_pydicom(files, out):
    import pydicom

    for f in files:
        pydicom.dcmread(f).save_as(out / f.name)


def tool_ours(files, out):
    from coercion import Deidentifier, Keys

    deid = Deidentifier.from_uri("deidentify:", Keys(os.urandom(32)))
    for f in files:
        deid.deidentify_file(f, out / f.name)


def tool_dicognito(files, out):
    import pydicom
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    for f in files:
        with pydicom.dcmread(f) as ds:
            anonymizer.anonymize(ds)
            ds.save_as(out / f.name)


def tool_dicom_anonymizer(files, out):
    from dicomanonymizer import anonymize_dicom_file

    for f in files:
        anonymize_dicom_file(str(f), str(out / f.name))


def tool_deid(files, out):
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    replace_identifiers(dicom_files=[str(f) for f in files], deid=DeidRecipe(), save=True,
                        output_folder=str(out), overwrite=True)


TOOLS = {
    "pydicom read+write (floor)": tool_pydicom,
    "coercion (ours)": tool_ours,
    "dicognito 0.19": tool_dicognito,
    "dicom-anonymizer 2.1": tool_dicom_anonymizer,
    "deid 0.4.13": tool_deid,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--on-disk", action="store_true",
                        help="read and write under bench/ instead of a tmpfs (/dev/shm)")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = BENCH if args.on_disk or not shm.is_dir() else shm / "coercion-bench"
    data = root / "data" / "ct"
    files = sorted(data.glob("*.dcm"))
    if len(files) != args.count:
        shutil.rmtree(data, ignore_errors=True)
        files = generate_ct_series(data, args.count)
    results = {}
    if shm.is_dir() and root != BENCH:
        import atexit

        atexit.register(shutil.rmtree, root, True)
    for name, tool in TOOLS.items():
        out = root / "out" / name.split()[0]
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        tool(files[:2], out)  # warm-up: imports, caches
        best = float("inf")
        for _ in range(args.repeat):
            shutil.rmtree(out)
            out.mkdir()
            os.sync()  # start clean: no tool pays for the dirty pages of the one before
            started = time.perf_counter()
            tool(files, out)
            best = min(best, time.perf_counter() - started)
        results[name] = len(files) / best
        print(f"{name}: {results[name]:.0f} instances/s", file=sys.stderr, flush=True)
    peers = {k: v for k, v in results.items() if k not in ("coercion (ours)", "pydicom read+write (floor)")}
    fastest = max(peers, key=peers.get)
    ours = results["coercion (ours)"]
    print(f"\n{len(files)} instances, {files[0].stat().st_size / 1e6:.2f} MB each, best of {args.repeat}, "
          f"files in {root}; Python {platform.python_version()} ({sys.executable})\n")
    print("| tool | instances/s | ours / tool |")
    print("| --- | ---: | ---: |")
    for name, rate in results.items():
        print(f"| {name} | {rate:.0f} | {ours / rate:.2f}x |")
    print(f"\nours / fastest peer ({fastest}): {ours / peers[fastest]:.2f}x (target: at least 3x)")


if __name__ == "__main__":
    main()
