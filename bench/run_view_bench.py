"""De-identified DICOMweb views against Orthanc's own DICOMweb plugin, same study, same Orthanc.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_view_bench.py [--rounds 5]

One Orthanc with the plugin and Orthanc's DICOMweb plugin holds the 300-instance CT series of
run_engine_bench.py (0.53 MB per instance; storage on a tmpfs). A view shows it in the pseudonyms
of an outgoing rule (``deidentify:RetainPatientIDHashOption``). Each round asks, through the view
and through ``/dicom-web/`` (interleaved: the machine's drift hits both alike):

* QIDO-RS: the study list (``studies``), and the series' instances (``instances`` below it);
* WADO-RS metadata of the series (300 headers);
* WADO-RS retrieve of the series (300 instances as multipart DICOM), read to the end.

The table gives median seconds per request and the view / DICOMweb plugin ratio (targets: 1.5x
for searches and metadata, 2x for retrieval), and the largest resident memory Orthanc reached
(VmHWM) after the retrieves: a view holds one instance at a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import children, start_orthanc, session as http_session  # noqa: E402
from generate_ct import generate_ct_series  # noqa: E402

RULES = ('- {name: to-research, dimse: C_STORE_RQ, role: SCP, receiving-peer: [research], '
         'uri: "deidentify:RetainPatientIDHashOption"}')
TOKEN = "bench-view-token-0123456789"


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(http, url: str, headers: dict) -> float:
    started = time.perf_counter()
    with http.get(url, headers=headers, stream=True, timeout=600) as response:
        response.raise_for_status()
        for _ in response.iter_content(1 << 20):
            pass
    return time.perf_counter() - started


def orthanc_memory_mb(orthanc) -> float:
    """Orthanc's largest resident memory so far (coercion serve starts it as its child)."""
    return max(peak_memory_mb(pid) for pid in [orthanc.process.pid, *children(orthanc.process.pid)])


def retrieve_memory(work: Path, count: int, through_view: bool) -> float:
    """A fresh Orthanc, the series retrieved three times through the view or the DICOMweb
    plugin only: Orthanc's largest resident memory (MB)."""
    orthanc = start_orthanc(work, RULES, coercion={
        "Views": {"research": {"Rule": "to-research", "TokenFile": str(work.parent / "view.token")}}})
    try:
        http = http_session()
        for path in sorted((work.parent / "series").glob("*.dcm"))[:count]:
            http.post(f"{orthanc.url}/instances", data=path.read_bytes()).raise_for_status()
        before = orthanc_memory_mb(orthanc)
        if through_view:
            url, headers = f"{orthanc.url}/coercion/dicom-web/research", {"X-Coercion-Token": TOKEN}
        else:
            url, headers = f"{orthanc.url}/dicom-web", {}
        study = http.get(f"{url}/studies", headers=headers).json()[0]["0020000D"]["Value"][0]
        for _ in range(3):
            timed(http, f"{url}/studies/{study}", headers)
        return before, orthanc_memory_mb(orthanc)
    finally:
        orthanc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:  # noqa: SIM117
        work = Path(tmp)
        (work / "view.token").write_text(TOKEN)
        orthanc = start_orthanc(work / "orthanc", RULES, coercion={
            "Views": {"research": {"Rule": "to-research", "TokenFile": str(work / "view.token")}}})
        try:
            http = http_session()
            for path in generate_ct_series(work / "series", args.count):
                http.post(f"{orthanc.url}/instances", data=path.read_bytes()).raise_for_status()
            base, view = f"{orthanc.url}/dicom-web", f"{orthanc.url}/coercion/dicom-web/research"
            headers = {"X-Coercion-Token": TOKEN}
            native_study = http.get(f"{base}/studies").json()[0]
            study, series = (native_study["0020000D"]["Value"][0],
                             http.get(f"{base}/studies/{native_study['0020000D']['Value'][0]}/series").json()[0]
                             ["0020000E"]["Value"][0])
            view_study = http.get(f"{view}/studies", headers=headers).json()[0]["0020000D"]["Value"][0]
            view_series = http.get(f"{view}/studies/{view_study}/series", headers=headers).json()[0][
                "0020000E"]["Value"][0]
            requests_ = {
                "QIDO studies": (f"{view}/studies", f"{base}/studies"),
                "QIDO instances of the series": (f"{view}/studies/{view_study}/series/{view_series}/instances",
                                                 f"{base}/studies/{study}/series/{series}/instances"),
                "WADO metadata of the series": (f"{view}/studies/{view_study}/series/{view_series}/metadata",
                                                f"{base}/studies/{study}/series/{series}/metadata"),
                "WADO retrieve of the series": (f"{view}/studies/{view_study}/series/{view_series}",
                                                f"{base}/studies/{study}/series/{series}"),
            }
            seconds: dict[str, dict[str, list[float]]] = {name: {"view": [], "dicomweb": []} for name in requests_}
            for round_ in range(args.rounds):
                for name, (through_view, native) in requests_.items():
                    order = [("view", through_view, headers), ("dicomweb", native, {})]
                    for kind, url, hdrs in (order if round_ % 2 == 0 else order[::-1]):
                        seconds[name][kind].append(timed(http, url, hdrs))
                print(f"round {round_ + 1} done", file=sys.stderr, flush=True)
            memory = orthanc_memory_mb(orthanc)
        except Exception:
            print((work / "orthanc" / "orthanc.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            orthanc.stop()
        alone = {kind: retrieve_memory(work / f"memory-{kind}", args.count, kind == "view")
                 for kind in ("view", "dicomweb")}
    print(f"{args.count} instances, {args.rounds} rounds, median seconds per request")
    print()
    print("| request | view | DICOMweb plugin | view / plugin | all rounds (view / plugin) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, kinds in seconds.items():
        view_median, native_median = statistics.median(kinds["view"]), statistics.median(kinds["dicomweb"])
        ratios = ", ".join(f"{v / n:.2f}" for v, n in zip(kinds["view"], kinds["dicomweb"]))
        print(f"| {name} | {view_median:.3f} | {native_median:.3f} | {view_median / native_median:.2f}x | {ratios} |")
    print()
    print(f"Orthanc's largest resident memory (VmHWM) after the rounds: {memory:.0f} MB")
    for kind, (before, after) in alone.items():
        print(f"A fresh Orthanc, the study retrieved 3 times through {kind} only: {before:.0f} MB before the "
              f"retrieves, {after:.0f} MB after (VmHWM)")


if __name__ == "__main__":
    main()
