"""Worklist C-FIND benchmark: latency over 1,000 items, Orthanc's sample plugin against ours.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_worklist_bench.py [--rounds 5]

Three Orthancs serve the same folder of 1,000 .wl items (100 stations, 1,000 patients):

* sample: Orthanc with its ModalityWorklists sample plugin;
* plugin, no matching rule: Orthanc with the coercion plugin and a worklist rule for another
  AE title (target: within 1.5x of sample);
* plugin, coercing rule: the same plugin, asked by the AE title its worklist rules coerce for
  (every item de-identified with RetainPatientIDHashOption and shifted dates and matched in
  that world; target: within 2x of sample, with the items' views cached).

dcmtk's findscu (one process and association per query, as a modality does) sends each query
``--repeat`` times a round; interleaved rounds, medians. TCP_NODELAY=1; storage on a tmpfs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO / "tests" / "integration"), str(REPO / "tests")]
from common import ENV, start_orthanc  # noqa: E402
from worklists import worklist_item  # noqa: E402

from coercion import Keys  # noqa: E402
from coercion.exchanges.worklist import encode  # noqa: E402

SAMPLE = "/usr/share/orthanc/plugins/libModalityWorklists.so"
URI = "deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption"
RULES = f"""
- {{name: mwl-asks, dimse: C_FIND_RQ, role: SCU, sending-aet: [CODED], sop-class: [1.2.840.10008.5.1.4.31],
   uri: "{URI}"}}
- {{name: mwl-sees, dimse: C_FIND_RSP, role: SCU, sending-aet: [CODED], sop-class: [1.2.840.10008.5.1.4.31],
   uri: "{URI}"}}
"""
STEP = "ScheduledProcedureStepSequence[0]."
KEYS = ["AccessionNumber", "PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID",
        STEP + "ScheduledStationAETitle", STEP + "ScheduledProcedureStepStartDate", STEP + "Modality",
        STEP + "ScheduledProcedureStepDescription"]
QUERIES = {
    "everything (1,000 items)": [],
    "one station's day": [STEP + "ScheduledStationAETitle=ST042", STEP + "ScheduledProcedureStepStartDate=20241215"],
    "one patient": ["PatientID=MRN0042"],
}


def in_pseudonyms(constraints: list[str], keys: Keys) -> list[str]:
    """The same query as the coerced caller asks it: item 42's patient by its pseudonym, its
    day shifted (both as the caller was given them)."""
    shift = timedelta(keys.date_shift_days("MRN0042", "HOSP"))
    mapped = []
    for key in constraints:
        if key == "PatientID=MRN0042":
            key = f"PatientID={keys.patient_id('MRN0042', 'HOSP')}"
        elif key.endswith("StartDate=20241215"):
            key = key.split("=")[0] + "=" + (date(2024, 12, 15) + shift).strftime("%Y%m%d")
        mapped.append(key)
    return mapped


def write_items(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        ds = worklist_item(f"MRN{index:04d}", f"DOE{index % 10}^PATIENT{index:04d}", f"ACC{index:06d}",
                           "CT" if index % 2 else "MR", f"ST{index % 100:03d}", f"202412{1 + index % 28:02d}")
        (folder / f"item{index:05d}.wl").write_bytes(encode(ds))


def findscu(port: int, keys: list[str], calling: str) -> tuple[float, int]:
    args = ["findscu", "-W", "-aet", calling, "-aec", "ORTHANC", "127.0.0.1", str(port), "-X", "-od", "/dev/null"]
    for key in keys:
        args += ["-k", key]
    out = tempfile.mkdtemp(prefix="wl-")
    args[args.index("/dev/null")] = out
    started = time.perf_counter()
    subprocess.run(args, capture_output=True, env=ENV, check=True)
    elapsed = time.perf_counter() - started
    answers = len(os.listdir(out))
    shutil.rmtree(out, ignore_errors=True)
    return elapsed, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="coercion-wl-", dir=shm if shm.is_dir() else None))
    servers = {}
    try:
        folder = root / "worklists"
        write_items(folder, args.count)
        worklists = {"Enable": True, "Database": str(folder)}
        common = {"Worklists": worklists, "DicomAlwaysAllowFindWorklist": True}
        servers["sample"] = start_orthanc(root / "sample", None, Plugins=[SAMPLE], **common)
        servers["plugin"] = start_orthanc(root / "plugin", RULES, **common)
        keys = Keys((root / "plugin" / "site.key").read_bytes())
        setups = {"sample": ("sample", "MODALITY"), "plugin, no matching rule": ("plugin", "MODALITY"),
                  "plugin, coercing rule": ("plugin", "CODED")}
        times = {(s, q): [] for s in setups for q in QUERIES}
        counts = {}
        for server, calling in set(setups.values()):  # warm-up: caches and the page cache
            findscu(servers[server].dicom_port, KEYS, calling)
        for round_ in range(args.rounds):
            for setup, (server, calling) in setups.items():
                for query, constraints in QUERIES.items():
                    if calling == "CODED":
                        constraints = in_pseudonyms(constraints, keys)
                    asked = constraints + [k for k in KEYS if not any(c.startswith(k + "=") for c in constraints)]
                    for _ in range(args.repeat):
                        elapsed, found = findscu(servers[server].dicom_port, asked, calling)
                        times[(setup, query)].append(elapsed)
                        counts[(setup, query)] = found
            print(f"round {round_ + 1} done", file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.count} worklist items, findscu -W, {args.rounds} interleaved rounds x {args.repeat}, medians\n")
    print("| query | answers (sample / no rule / coerced) | sample ms | plugin, no rule ms | ratio | "
          "plugin, coercing rule ms | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for query in QUERIES:
        median = {s: statistics.median(times[(s, query)]) * 1000 for s in setups}
        found = " / ".join(str(counts[(s, query)]) for s in setups)
        base = median["sample"]
        print(f"| {query} | {found} | {base:.1f} | {median['plugin, no matching rule']:.1f} | "
              f"{median['plugin, no matching rule'] / base:.2f}x | {median['plugin, coercing rule']:.1f} | "
              f"{median['plugin, coercing rule'] / base:.2f}x |")
    print("\ntargets: no matching rule within 1.5x, coercing rule within 2x")


if __name__ == "__main__":
    main()
