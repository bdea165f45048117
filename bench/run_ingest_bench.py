"""Ingest benchmark: storescu of a 300-instance CT series (one association) into Orthanc.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_ingest_bench.py [--rounds 3] [--baseline DIR]

Three set-ups, each in a fresh Orthanc with empty storage, interleaved over the rounds so
that the machine's drift hits them alike; the best round of each counts:

* plain: Orthanc without any plugin;
* no-match: the plugin with a rule for another calling AE title;
* basic-rule: the plugin with a basic-profile rule (``deidentify:``) for every instance
  received: decided and coerced in the received-instance callback, stored once;
* basic-rule-by-aet: the same rule limited to the calling AE title: Orthanc does not tell the
  received-instance callback the AE title, so the instance is coerced in the C-STORE filter
  and the coerced copy stored through ``POST /instances`` (Orthanc ingests it twice).

TCP_NODELAY=1 is set for Orthanc and storescu (Debian's DCMTK waits about 40 ms per message
on delayed acknowledgements without it). Storage is on a tmpfs unless --on-disk.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import ENV, cpu_seconds, interleaved_rounds, print_table, start_orthanc, session as http_session  # noqa: E402
from generate_ct import generate_ct_series  # noqa: E402

RULES = {
    # a rule for another AE title: the plugin looks and lets the instance pass
    "no-match": '- {name: bench, dimse: C_STORE_RQ, role: SCU, sending-aet: [NOBODY], uri: "deidentify:"}',
    # the data alone decides: coerced in the received-instance callback, stored once
    "basic-rule": '- {name: bench, dimse: C_STORE_RQ, role: SCU, uri: "deidentify:"}',
    # the calling AE title decides: coerced in the C-STORE filter and stored again through REST
    "basic-rule-by-aet": '- {name: bench, dimse: C_STORE_RQ, role: SCU, sending-aet: [BENCH], uri: "deidentify:"}',
}


BASELINE = " (baseline)"
THREADS_OFF = " (AllowThreads off)"  # orthanc-python 4.3+: the GIL kept during calls into Orthanc


def run_once(setup: str, files: list[Path], root: Path, baseline: Path | None = None) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(dir=root))
    name = setup.removesuffix(BASELINE).removesuffix(THREADS_OFF)
    plugin = baseline / "plugin" if setup.endswith(BASELINE) else None
    python = {"Python": {"AllowThreads": not setup.endswith(THREADS_OFF)}}
    orthanc = start_orthanc(work, None if name == "plain" else RULES[name], plugin=plugin, **python)
    try:
        cpu_before = cpu_seconds(orthanc.process.pid)
        started = time.perf_counter()
        result = subprocess.run(["storescu", "-aet", "BENCH", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port),
                                 *map(str, files)], capture_output=True, text=True, env=ENV)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(orthanc.process.pid) - cpu_before
        count = http_session().get(f"{orthanc.url}/statistics").json()["CountInstances"]
        if result.returncode != 0 or count != len(files):
            raise RuntimeError(f"{setup}: storescu rc={result.returncode}, {count} stored\n{result.stderr[-2000:]}")
        return len(files) / elapsed, cpu / len(files) * 1000
    finally:
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--on-disk", action="store_true")
    parser.add_argument("--only", nargs="+", choices=list(RULES), help="the plugin set-ups to run (plain always runs)")
    parser.add_argument("--threads-off-too", action="store_true",
                        help='each plugin set-up also with "Python": {"AllowThreads": false} (orthanc-python 4.3+)')
    parser.add_argument("--baseline", type=Path,
                        help="another checkout: its plugin runs each plugin set-up too, in the same rounds (A/B)")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="coercion-ingest-", dir=None if args.on_disk or not shm.is_dir() else shm))
    try:
        files = generate_ct_series(root / "series", args.count)
        setups = ["plain"]
        for setup in args.only or RULES:
            setups += [setup, setup + BASELINE] if args.baseline else [setup]
            setups += [setup + THREADS_OFF] if args.threads_off_too else []
        rates, cpu = interleaved_rounds(setups, args.rounds,
                                        lambda setup: run_once(setup, files, root, args.baseline and args.baseline.resolve()),
                                        "Orthanc CPU")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.count} instances of 0.53 MB, one association, {args.rounds} interleaved rounds, "
          f"storage in {'tmpfs' if str(root).startswith('/dev/shm') else 'disk'}\n")
    print_table(rates, cpu, "Orthanc CPU")
    print("\ntargets: no-match >= 0.95x, a rule-matched ingest >= 0.75x")


if __name__ == "__main__":
    main()
