"""Forwarding benchmark: Orthanc sends a 300-instance CT series to a second Orthanc.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_forward_bench.py [--rounds 3]

``POST /modalities/research/store`` (synchronous) from a sending Orthanc that holds the
series to a receiving Orthanc (no plugin, empty storage, a fresh one each time). Set-ups,
interleaved over the rounds:

* plain: the sender without any plugin (Orthanc's C-STORE SCU, one association);
* no-rule: the sender with the plugin and an outgoing rule for another peer (Orthanc's own
  send, through the plugin's route);
* coercion-rule: an outgoing basic-profile rule for the receiver (each instance fetched,
  coerced, spooled and sent by storescu, Coercion.SendBatchSize instances per association).

TCP_NODELAY=1 for both Orthancs; storage on a tmpfs unless --on-disk.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import cpu_seconds, interleaved_rounds, print_table, start_orthanc, session as http_session  # noqa: E402
from generate_ct import generate_ct_series  # noqa: E402

RULES = {
    "plain": None,
    "no-rule": '- {name: bench, dimse: C_STORE_RQ, role: SCP, receiving-aet: [NOBODY], uri: "deidentify:"}',
    "coercion-rule": '- {name: bench, dimse: C_STORE_RQ, role: SCP, receiving-aet: [RESEARCH], uri: "deidentify:"}',
}


def run_once(setup: str, files: list[Path], root: Path, batch: int) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(dir=root))
    receiver = start_orthanc(work / "receiver", None, aet="RESEARCH")
    sender = start_orthanc(work / "sender", RULES[setup], modalities={"RESEARCH": receiver.dicom_port},
                           coercion={"SendBatchSize": batch})
    try:
        session = http_session()
        ids = {session.post(sender.url + "/instances", data=f.read_bytes()).json()["ParentSeries"] for f in files}
        cpu_before = cpu_seconds(sender.process.pid)
        started = time.perf_counter()
        answer = session.post(sender.url + "/modalities/research/store",
                              json={"Resources": sorted(ids), "Synchronous": True}, timeout=600)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(sender.process.pid) - cpu_before
        received = session.get(receiver.url + "/statistics").json()["CountInstances"]
        if not answer.ok or received != len(files):
            raise RuntimeError(f"{setup}: HTTP {answer.status_code}, {received} received: {answer.text[:500]}")
        return len(files) / elapsed, cpu / len(files) * 1000
    finally:
        sender.stop()
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32, help="Coercion.SendBatchSize of the sender")
    parser.add_argument("--on-disk", action="store_true")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="coercion-forward-", dir=None if args.on_disk or not shm.is_dir() else shm))
    try:
        files = generate_ct_series(root / "series", args.count)
        rates, cpu = interleaved_rounds(list(RULES), args.rounds, lambda setup: run_once(setup, files, root, args.batch),
                                        "sender CPU")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.count} instances of 0.53 MB, {args.rounds} interleaved rounds, SendBatchSize {args.batch}, "
          f"storage in {'disk' if args.on_disk else 'tmpfs'}\n")
    print_table(rates, cpu, "sender CPU")
    print("\ntarget: coerced forwarding >= 0.6x of plain forwarding")


if __name__ == "__main__":
    main()
