"""C-FIND benchmark: study-level latency over 1,000 studies, Orthanc with and without the plugin.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_find_bench.py [--rounds 5]

Two Orthancs hold the same 1,000 studies (one small CT instance each, 100 patients):

* plain: Orthanc without any plugin (its own C-FIND SCP);
* plugin, no matching rule: Orthanc with the plugin and C-FIND rules for another AE title, so
  the plugin's C-FIND SCP (which replaces Orthanc's) answers as Orthanc would.

dcmtk's findscu (``--client pynetdicom``: a pynetdicom SCU on one association) sends each
query of the mix ``--repeat`` times a round; the table gives the median latency per query
(interleaved rounds: the machine's drift hits both alike). Both answer the same studies
(checked with pynetdicom each round). TCP_NODELAY=1 for Orthanc and findscu; storage on a
tmpfs.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import ENV, cpu_seconds, start_orthanc, session as http_session  # noqa: E402

# The plugin's C-FIND SCP is registered (a C-FIND rule exists) but matches nobody here.
RULES = ('- {name: bench-find, dimse: C_FIND_RSP, role: SCU, sending-aet: [NOBODY], '
         'uri: "deidentify:RetainPatientIDHashOption"}')
RETURN_KEYS = ["PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyTime", "AccessionNumber",
               "StudyDescription", "StudyInstanceUID", "ReferringPhysicianName"]
QUERIES = {
    # a viewer's study list: every study of a year, the usual columns
    "all 1,000 studies": {"StudyDate": "20240101-20241231"},
    "one patient (PatientID)": {"PatientID": "PAT0042"},
    "name wildcard (~100)": {"PatientName": "DOE7*"},
    "one study (UID)": {"StudyInstanceUID": "2.25.1000042"},
    "with ModalitiesInStudy, counts": {"PatientID": "PAT0042", "ModalitiesInStudy": "",
                                       "NumberOfStudyRelatedInstances": "", "NumberOfStudyRelatedSeries": ""},
}


def study_files(count: int, patients: int) -> list[bytes]:
    rng = random.Random(1)
    files = []
    for index in range(count):
        patient = index % patients
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.StudyInstanceUID = f"2.25.{1000000 + index}"
        ds.SeriesInstanceUID = f"2.25.{2000000 + index}"
        ds.SOPInstanceUID = f"2.25.{3000000 + index}"
        ds.PatientID = f"PAT{patient:04d}"
        ds.PatientName = f"DOE{patient % 10}^PATIENT{patient:04d}"
        ds.PatientBirthDate = f"19{40 + patient % 60:02d}0101"
        ds.PatientSex = "MF"[patient % 2]
        ds.StudyDate = f"2024{1 + index % 12:02d}{1 + index % 28:02d}"
        ds.StudyTime = f"{8 + index % 10:02d}{index % 60:02d}00"
        ds.AccessionNumber = f"ACC{index:06d}"
        ds.StudyDescription = rng.choice(["CT CHEST", "CT HEAD", "CT ABDOMEN"])
        ds.ReferringPhysicianName = "WELBY^MARCUS"
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = bytes(128)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        files.append(buffer.getvalue())
    return files


def identifier(query: dict) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, "")
    for keyword, value in query.items():
        setattr(ds, keyword, value)
    return ds


def run_queries(port: int, pid: int, repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]], dict]:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    if not assoc.is_established:
        raise RuntimeError("association refused")
    times: dict[str, list[float]] = {name: [] for name in QUERIES}
    cpu: dict[str, list[float]] = {name: [] for name in QUERIES}
    answers: dict[str, list] = {}
    try:
        for _ in range(repeat):
            for name, query in QUERIES.items():
                cpu_before = cpu_seconds(pid)
                started = time.perf_counter()
                found = [ds for status, ds in assoc.send_c_find(identifier(query),
                                                                 StudyRootQueryRetrieveInformationModelFind)
                         if status and status.Status in (0xFF00, 0xFF01)]
                times[name].append(time.perf_counter() - started)
                cpu[name].append(cpu_seconds(pid) - cpu_before)
                answers[name] = sorted(str(ds.StudyInstanceUID) for ds in found)
    finally:
        assoc.release()
    return times, cpu, answers


def run_findscu(port: int, pid: int, repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]], dict]:
    """The same mix through dcmtk's findscu (a C++ SCU, one association per query): the
    latency a workstation sees, with little client time on top of the server's."""
    times: dict[str, list[float]] = {name: [] for name in QUERIES}
    cpu: dict[str, list[float]] = {name: [] for name in QUERIES}
    counts: dict[str, list] = {}
    for _ in range(repeat):
        for name, query in QUERIES.items():
            args = ["findscu", "-v", "-S", "-aet", "BENCH", "-aec", "ORTHANC", "127.0.0.1", str(port),
                    "-k", "QueryRetrieveLevel=STUDY"]
            for keyword in RETURN_KEYS:
                args += ["-k", f"{keyword}={query[keyword]}" if keyword in query else keyword]
            for keyword, value in query.items():
                if keyword not in RETURN_KEYS:
                    args += ["-k", f"{keyword}={value}" if value else keyword]
            cpu_before = cpu_seconds(pid)
            started = time.perf_counter()
            run = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=120)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(cpu_seconds(pid) - cpu_before)
            counts[name] = [run.stderr.count("(Pending)") + run.stdout.count("(Pending)")]
    return times, cpu, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5, help="each query, per round")
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--client", choices=("findscu", "pynetdicom"), default="findscu",
                        help="the SCU whose latency is measured (answers are checked with pynetdicom either way)")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="coercion-find-", dir=shm if shm.is_dir() else None))
    servers = {}
    try:
        servers["plain"] = start_orthanc(root / "plain", None, DicomAlwaysAllowFind=True)
        servers["plugin, no matching rule"] = start_orthanc(root / "plugin", RULES, DicomAlwaysAllowFind=True)
        files = study_files(args.studies, max(1, args.studies // 10))
        for server in servers.values():
            session = http_session()
            for data in files:
                session.post(server.url + "/instances", data=data).raise_for_status()
        medians: dict[str, dict[str, list[float]]] = {s: {q: [] for q in QUERIES} for s in servers}
        cpu_medians: dict[str, dict[str, list[float]]] = {s: {q: [] for q in QUERIES} for s in servers}
        for round_ in range(args.rounds):
            reference = None
            for setup, server in servers.items():
                times, cpu, answers = run_queries(server.dicom_port, server.process.pid,
                                                  args.repeat if args.client == "pynetdicom" else 1)
                if args.client == "findscu":
                    times, cpu, counts = run_findscu(server.dicom_port, server.process.pid, args.repeat)
                    if any(counts[n] != [len(answers[n])] for n in QUERIES):
                        raise RuntimeError(f"{setup}: findscu saw other answer counts than pynetdicom")
                if reference is None:
                    reference = answers
                elif answers != reference:
                    raise RuntimeError(f"{setup} answered differently from plain")
                for name in QUERIES:
                    medians[setup][name].append(statistics.median(times[name]))
                    cpu_medians[setup][name].append(statistics.median(cpu[name]))
                print(f"round {round_ + 1} {setup}: " + ", ".join(
                    f"{name} {statistics.median(times[name]) * 1000:.1f} ms" for name in QUERIES),
                      file=sys.stderr, flush=True)
        counts = {name: len(reference[name]) for name in QUERIES}
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.studies} studies, {args.rounds} interleaved rounds x {args.repeat} queries each, client "
          f"{args.client} ({'one association per query' if args.client == 'findscu' else 'one association per round'})\n")
    plain, plugin = list(servers)
    print(f"| query (study level) | answers | {plain} ms | {plugin} ms | latency ratio | best rounds "
          "| server CPU ms, plain / plugin | CPU ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in QUERIES:
        a, b = statistics.median(medians[plain][name]), statistics.median(medians[plugin][name])
        best = min(medians[plugin][name]) / min(medians[plain][name])
        ca, cb = statistics.median(cpu_medians[plain][name]), statistics.median(cpu_medians[plugin][name])
        print(f"| {name} | {counts[name]} | {a * 1000:.1f} | {b * 1000:.1f} | {b / a:.2f}x | {best:.2f}x "
              f"| {ca * 1000:.0f} / {cb * 1000:.0f} | {f'{cb / ca:.2f}x' if ca else 'under a tick'} |")
    print("\n(latency: median over rounds of each round's median, as the client sees it, its own decoding "
          "included; server CPU: the Orthanc process, in 10 ms clock ticks)")
    print("\ntarget: C-FIND through the plugin with no matching rule within 1.5x of Orthanc's native latency")


if __name__ == "__main__":
    main()
