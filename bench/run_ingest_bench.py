"""Ingest benchmark: storescu of a 300-instance CT series (one association) into Orthanc.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_ingest_bench.py [--rounds 3]

Three set-ups, each in a fresh Orthanc with empty storage, interleaved over the rounds so
that the machine's drift hits them alike; the best round of each counts:

* plain: Orthanc without any plugin;
* no-match: Orthanc with the plugin and a rule that does not match the calling AE title;
* basic-rule: Orthanc with the plugin and a basic-profile rule (``deidentify:``) that does.

TCP_NODELAY=1 is set for Orthanc and storescu (Debian's DCMTK waits about 40 ms per message
on delayed acknowledgements without it). Storage is on a tmpfs unless --on-disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from generate_ct import generate_ct_series  # noqa: E402

RULES = """
- name: bench
  dimse: C_STORE_RQ
  role: SCU
  sending-aet: [{aet}]
  uri: "deidentify:"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(setup: str, files: list[Path], root: Path) -> float:
    work = Path(tempfile.mkdtemp(dir=root))
    http, dicom = free_port(), free_port()
    config = json.loads((REPO / "orthanc.json").read_text())
    config.update(HttpPort=http, DicomPort=dicom, StorageDirectory=str(work / "storage"),
                  IndexDirectory=str(work / "storage"), DicomAlwaysAllowStore=True, DicomModalities={})
    config["PythonScript"] = str(REPO / "plugin" / "orthanc_entry.py")
    env = dict(os.environ, TCP_NODELAY="1")
    if setup == "plain":
        config["Plugins"] = []
        config.pop("PythonScript")
        command = ["Orthanc"]
    else:
        (work / "rules").mkdir()
        aet = "NOBODY" if setup == "no-match" else "BENCH"
        (work / "rules" / "bench.yaml").write_text(RULES.format(aet=aet))
        (work / "site.key").write_bytes(os.urandom(32))
        config["Coercion"] = {"RulesDirectory": str(work / "rules"), "SecretFile": str(work / "site.key"),
                              "LinkageDatabase": str(work / "linkage.sqlite")}
        command = [sys.executable, "-m", "coercion.cli", "serve", "--config"]
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("wb")
    process = subprocess.Popen([*command, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(300):
            try:
                if requests.get(f"http://127.0.0.1:{http}/system", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        started = time.perf_counter()
        result = subprocess.run(["storescu", "-aet", "BENCH", "-aec", "ORTHANC", "127.0.0.1", str(dicom),
                                 *map(str, files)], capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - started
        count = requests.get(f"http://127.0.0.1:{http}/statistics").json()["CountInstances"]
        if result.returncode != 0 or count != len(files):
            raise RuntimeError(f"{setup}: storescu rc={result.returncode}, {count} stored\n{result.stderr[-2000:]}")
        return len(files) / elapsed
    finally:
        process.terminate()
        process.wait(60)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--on-disk", action="store_true")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="coercion-ingest-", dir=None if args.on_disk or not shm.is_dir() else shm))
    try:
        files = generate_ct_series(root / "series", args.count)
        setups = ["plain", "no-match", "basic-rule"]
        rates: dict[str, list[float]] = {s: [] for s in setups}
        for round_ in range(args.rounds):
            for setup in setups:
                rates[setup].append(run_once(setup, files, root))
                print(f"round {round_ + 1} {setup}: {rates[setup][-1]:.0f} instances/s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best = {s: max(v) for s, v in rates.items()}
    print(f"\n{args.count} instances of 0.53 MB, one association, "
          f"best of {args.rounds} interleaved rounds, storage in {'tmpfs' if str(root).startswith('/dev/shm') else 'disk'}\n")
    print("| set-up | instances/s (best) | all rounds | ratio to plain |")
    print("| --- | ---: | --- | ---: |")
    for setup in rates:
        print(f"| {setup} | {best[setup]:.0f} | {', '.join(f'{r:.0f}' for r in rates[setup])} | "
              f"{best[setup] / best['plain']:.2f}x |")
    print("\ntargets: no-match >= 0.95x, basic-rule >= 0.75x")


if __name__ == "__main__":
    main()
