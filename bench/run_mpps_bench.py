"""MPPS benchmark: the round trip of N-CREATE and N-SET to the plugin's MPPS SCP.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_mpps_bench.py [--associations 20] [--steps 10]

A pynetdicom SCU (the modality, with TCP_NODELAY as DCMTK's tools run with TCP_NODELAY=1;
``--nagle`` leaves it off) opens ``--associations`` associations one after the other and in
each performs ``--steps`` procedure steps: an N-CREATE (IN PROGRESS), an N-SET with a performed
series of 20 images, and an N-SET COMPLETED. Each message's round trip (request sent to
response received) is timed; the table gives the median, the 90th percentile and the worst of
each kind, and the association set-up. Set-ups, interleaved over the rounds:

* no-rule: the step is checked and kept (sealed) as received;
* coercion-rule: rules for N_CREATE_RQ and N_SET_RQ with the basic profile coerce each message
  for the caller before it is kept;
* route: as no-rule, and a route forwards the step to a RIS (a pynetdicom MPPS SCP in a
  process of its own), while the SCU goes on.

Target (issue 11): under 20 ms for each N-CREATE and N-SET.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import start_orthanc  # noqa: E402

MPPS = "1.2.840.10008.3.1.2.3.3"
RULES = {
    "no-rule": '- {name: other, dimse: N_CREATE_RQ, role: SCU, sending-aet: [NOBODY], uri: "deidentify:"}',
    "coercion-rule": "\n".join([
        '- {name: in, dimse: N_CREATE_RQ, role: SCU, sending-aet: [MODALITY], uri: "deidentify:"}',
        '- {name: in-set, dimse: N_SET_RQ, role: SCU, sending-aet: [MODALITY], uri: "deidentify:"}']),
    "route": '- {name: to-ris, dimse: N_CREATE_RQ, role: SCU, sending-aet: [MODALITY], '
             'forward: {to: [ris], when: received}}',
}


def uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def create_attributes() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    item = Dataset()
    item.StudyInstanceUID = uid()
    item.AccessionNumber = "ACC-1"
    item.RequestedProcedureID = "RP-1"
    item.ScheduledProcedureStepID = "SPS-1"
    item.ScheduledProcedureStepDescription = "CT chest"
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PatientName = "Müller^Jörg"
    ds.PatientID = "MRN-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.PerformedProcedureStepID = "PPS-1"
    ds.PerformedStationAETitle = "MODALITY"
    ds.PerformedStationName = "CT 1"
    ds.PerformedLocation = "Room 1"
    ds.PerformedProcedureStepStartDate = "20241101"
    ds.PerformedProcedureStepStartTime = "083000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = "CT chest"
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedSeriesSequence = Sequence()
    return ds


def series(images: int = 20) -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.SeriesInstanceUID = uid()
    item.ProtocolName = "Chest"
    item.OperatorsName = "Tech^Tom"
    item.PerformingPhysicianName = "House^Gregory"
    item.SeriesDescription = "Chest 1 mm"
    item.RetrieveAETitle = "ORTHANC"
    refs = []
    for _ in range(images):
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ref.ReferencedSOPInstanceUID = uid()
        refs.append(ref)
    item.ReferencedImageSequence = Sequence(refs)
    ds.PerformedSeriesSequence = Sequence([item])
    return ds


def completed() -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20241101"
    ds.PerformedProcedureStepEndTime = "091500"
    return ds


def distinct_ports(count: int) -> list[int]:
    """Free ports, all different (each one bound while the next is chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_once(setup: str, root: Path, associations: int, steps: int, nagle: bool) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(dir=root))
    mpps_port, modality_port, ris_port = distinct_ports(3)
    ris_process = orthanc = None
    modalities = {"MODALITY": modality_port}
    times: dict[str, list[float]] = {"association": [], "N-CREATE": [], "N-SET series": [], "N-SET COMPLETED": []}
    try:
        if setup == "route":
            modalities["RIS"] = ris_port
            ris_process = subprocess.Popen([sys.executable, __file__, "--ris", str(ris_port)])
        orthanc = start_orthanc(work, RULES[setup], modalities=modalities, coercion={"Mpps": {"Port": mpps_port}})
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(MPPS)
        for _ in range(associations):
            started = time.perf_counter()
            assoc = ae.associate("127.0.0.1", mpps_port, ae_title="ORTHANC")
            times["association"].append(time.perf_counter() - started)
            if not assoc.is_established:
                raise RuntimeError(f"association refused; see {work / 'orthanc.log'}")
            if not nagle:
                assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(steps):
                step = uid()
                for kind, send in (("N-CREATE", lambda: assoc.send_n_create(create_attributes(), MPPS, step)),
                                   ("N-SET series", lambda: assoc.send_n_set(series(), MPPS, step)),
                                   ("N-SET COMPLETED", lambda: assoc.send_n_set(completed(), MPPS, step))):
                    started = time.perf_counter()
                    status, _ = send()
                    times[kind].append(time.perf_counter() - started)
                    if status.get("Status") != 0:
                        raise RuntimeError(f"{setup}: {kind} answered {status.get('Status')}")
            assoc.release()
    except BaseException:
        log = work / "orthanc.log"
        if log.exists():  # say why before the folder goes
            print(f"{setup}: Orthanc's log ends:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]),
                  file=sys.stderr)
        raise
    finally:
        if orthanc is not None:
            orthanc.stop()
        if ris_process is not None:
            ris_process.terminate()
            ris_process.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return times


def ris(port: int) -> None:
    """The RIS of the route set-up: answers every N-CREATE and N-SET with Success."""
    ae = AE(ae_title="RIS")
    ae.add_supported_context(MPPS)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[
        (evt.EVT_N_CREATE, lambda event: (0, None)), (evt.EVT_N_SET, lambda event: (0, None))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="procedure steps per association")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nagle", action="store_true", help="leave TCP_NODELAY off on the SCU's socket")
    parser.add_argument("--ris", type=int, help=argparse.SUPPRESS)  # run as the route's RIS on this port
    args = parser.parse_args()
    if args.ris:
        ris(args.ris)
        return 0
    root = Path(tempfile.mkdtemp(prefix="coercion-mpps-bench-"))
    merged: dict[str, dict[str, list[float]]] = {s: {} for s in RULES}
    try:
        for round_ in range(args.rounds):
            for setup in RULES:
                times = run_once(setup, root, args.associations, args.steps, args.nagle)
                for kind, values in times.items():
                    merged[setup].setdefault(kind, []).extend(values)
                print(f"round {round_ + 1} {setup}: N-CREATE median "
                      f"{statistics.median(times['N-CREATE']) * 1000:.1f} ms", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    count = args.rounds * args.associations * args.steps
    print(f"{count} steps per set-up ({args.rounds} rounds x {args.associations} associations x {args.steps} steps), "
          f"TCP_NODELAY {'off' if args.nagle else 'on'} at the SCU")
    print("| set-up | message | median ms | p90 ms | worst ms |")
    print("| --- | --- | ---: | ---: | ---: |")
    for setup, kinds in merged.items():
        for kind, values in kinds.items():
            ordered = sorted(values)
            p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
            print(f"| {setup} | {kind} | {statistics.median(ordered) * 1000:.1f} | {p90 * 1000:.1f} "
                  f"| {ordered[-1] * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
