"""What the Orthanc benchmarks share: free ports, an Orthanc started with or without the
plugin in a folder of its own, and the CPU time of a process tree."""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TCP_NODELAY="1")  # Debian's DCMTK waits ~40 ms per message without it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its children (the Orthanc process under
    `coercion serve` is its child): a measure the machine's noise moves less than wall time."""
    total = 0.0
    for p in [pid, *children(pid)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(v) for v in fields[11:13])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in found] + [g for c in found for g in children(int(c))]


@dataclass
class Orthanc:
    process: subprocess.Popen
    http_port: int
    dicom_port: int
    log: object

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        self.log.close()


# Orthanc's REST API asks for a credential, as the shipped orthanc.json has it (one per run).
AUTH = ("bench", secrets.token_urlsafe(24))


def session() -> requests.Session:
    """HTTP with the credential of the Orthancs start_orthanc starts."""
    http = requests.Session()
    http.auth = AUTH
    return http


def start_orthanc(work: Path, rules: str | None, aet: str = "ORTHANC", modalities: dict | None = None,
                  coercion: dict | None = None, plugin: Path | None = None, **settings) -> Orthanc:
    """Orthanc with the repository's orthanc.json in ``work``: without any plugin when
    ``rules`` is None, else with the coercion plugin (and DICOMweb), these rules and the
    ``coercion`` settings; ``plugin``: the plugin/ folder of another checkout (an A/B run)."""
    work.mkdir(parents=True, exist_ok=True)
    http, dicom = free_port(), free_port()
    config = json.loads((REPO / "orthanc.json").read_text())
    config.pop("Worklists", None)  # a set-up asks for the SCPs it measures
    config.update(HttpPort=http, DicomPort=dicom, DicomAet=aet, StorageDirectory=str(work / "storage"),
                  IndexDirectory=str(work / "storage"), DicomAlwaysAllowStore=True,
                  DicomModalities={name.lower(): [name, "127.0.0.1", port] for name, port in (modalities or {}).items()},
                  AuthenticationEnabled=True, RegisteredUsers={AUTH[0]: AUTH[1]}, **settings)
    config["PythonScript"] = str((plugin or REPO / "plugin") / "orthanc_entry.py")
    if rules is None:
        config["Plugins"] = settings.get("Plugins", [])  # Orthanc's own plugins only (none by default)
        config.pop("PythonScript")
        config.pop("Coercion", None)
        command = ["Orthanc"]
    else:
        (work / "rules").mkdir(exist_ok=True)
        (work / "rules" / "bench.yaml").write_text(rules + "\n")
        (work / "site.key").write_bytes(os.urandom(32))
        config["Coercion"] = {"RulesDirectory": str(work / "rules"), "SecretFile": str(work / "site.key"),
                              "LinkageDatabase": str(work / "linkage.sqlite"), **(coercion or {})}
        command = [sys.executable, "-m", "coercion.cli", "serve", "--config"]
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("wb")
    env = dict(ENV, PYTHONPATH=str(plugin)) if plugin else ENV
    process = subprocess.Popen([*command, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, env=env)
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{http}/system", timeout=1, auth=AUTH).ok:
                return Orthanc(process, http, dicom, log)
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"Orthanc did not start; see {work / 'orthanc.log'}")


def interleaved_rounds(setups: list[str], rounds: int, run_once, cpu_label: str) -> tuple[dict, dict]:
    """Run every set-up once a round, ``rounds`` times (the machine's drift hits them alike);
    ``run_once(setup)`` gives (instances per second, CPU ms per instance)."""
    rates: dict[str, list[float]] = {s: [] for s in setups}
    cpu: dict[str, list[float]] = {s: [] for s in setups}
    for round_ in range(rounds):
        for setup in setups:
            rate, cpu_ms = run_once(setup)
            rates[setup].append(rate)
            cpu[setup].append(cpu_ms)
            print(f"round {round_ + 1} {setup}: {rate:.0f} instances/s, {cpu_label} {cpu_ms:.2f} ms/instance",
                  file=sys.stderr, flush=True)
    return rates, cpu


def print_table(rates: dict, cpu: dict, cpu_label: str) -> None:
    """The Markdown table bench/README.md records; the first set-up is the reference."""
    reference = next(iter(rates))
    best = {s: max(v) for s, v in rates.items()}
    median = {s: statistics.median(v) for s, v in rates.items()}
    print(f"| set-up | instances/s best | median | all rounds | best / {reference} | median / {reference} "
          f"| {cpu_label} ms/instance (least) |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for setup in rates:
        print(f"| {setup} | {best[setup]:.0f} | {median[setup]:.0f} | {', '.join(f'{r:.0f}' for r in rates[setup])} "
              f"| {best[setup] / best[reference]:.2f}x | {median[setup] / median[reference]:.2f}x "
              f"| {min(cpu[setup]):.2f} |")
