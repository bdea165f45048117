"""Throw-away Debian chroots with the Orthanc that sites run (tests/test_platforms.py).

A release's chroot is made once per machine with ``debootstrap --variant=minbase`` from
Debian's archive and kept in ``COERCION_CHROOTS`` (default /var/cache/coercion-chroots); the
project's files are copied into it afresh for each run. Inside: /proc, /dev and a tmpfs
/dev/shm (Orthanc and DCMTK need them), /etc/hostid, the host's resolver and CA bundle (for
apt and pip), and apt told to accept a Release file past its Valid-Until date (the archive as
this machine reaches it may serve testing's late). The chroot shares the host's network, so
its servers take free loopback ports.

Never is anything removed recursively while /dev is bound inside: ``Chroot.mounted`` unmounts
in a ``finally``, and only the project's copy (under /root) is ever replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
RELEASES = ("trixie", "forky")
# The releases a run of the suite checks: all by default (the README's test command runs every
# test); COERCION_PLATFORMS="none" (or a subset) for a quicker run on a developer's machine.
CHOSEN = os.environ.get("COERCION_PLATFORMS", " ".join(RELEASES)).split()
# Every exchange, and Orthanc's own behaviour for callers no rule names (the parity tests).
INTEGRATION = [
    "tests/integration/test_ingest.py", "tests/integration/test_store_native.py",
    "tests/integration/test_outgoing_store.py", "tests/integration/test_routes.py",
    "tests/integration/test_retrieve.py", "tests/integration/test_move_native.py",
    "tests/integration/test_find_coerced.py", "tests/integration/test_find_native.py",
    "tests/integration/test_find_outgoing.py", "tests/integration/test_query_native.py",
    "tests/integration/test_worklist_coerced.py", "tests/integration/test_worklist_native.py",
    "tests/integration/test_mpps_scp.py", "tests/integration/test_admin_routes.py",
    "tests/integration/test_clean_pixels_orthanc.py", "tests/integration/test_who_is_asking.py",
    "tests/integration/test_find_by_host.py", "tests/integration/test_peers.py",
    "tests/integration/test_worker_threads.py", "tests/integration/test_views.py",
]
CACHE = Path(os.environ.get("COERCION_CHROOTS", "/var/cache/coercion-chroots"))
MIRROR = os.environ.get("COERCION_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# debootstrap's script for a release it may not know by name (testing's, on Debian 12).
SCRIPTS = {"trixie": None, "forky": "/usr/share/debootstrap/scripts/sid"}
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
INSIDE_CA = "/etc/coercion-host-ca.crt"
COPY = "/root/coercion"  # the project inside
KEPT = (".venv",)  # kept from one run's copy to the next: pip's work is the slow part (var/,
# the data and secrets of the last run, is not: the first command starts as on a fresh clone)


def available() -> str | None:
    """Why chroots cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "making a chroot needs root"
    if not shutil.which("debootstrap"):
        return "debootstrap is not installed (plugin/scripts/test.sh installs it)"
    return None


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, **kwargs)


class Chroot:
    def __init__(self, release: str):
        self.release = release
        self.root = CACHE / release

    # -- making it ------------------------------------------------------------------------

    def ensure(self, log) -> None:
        """Make the chroot unless a whole one is there (made in a side folder, then renamed:
        a debootstrap that failed half-way is never taken for a chroot)."""
        if (self.root / ".coercion-ready").exists():
            return
        CACHE.mkdir(parents=True, exist_ok=True)
        making = CACHE / f"{self.release}.making"
        if making.exists():
            self._remove_unmounted(making)
        script = SCRIPTS.get(self.release)
        _run(["debootstrap", "--variant=minbase", self.release, str(making), MIRROR, *([script] if script else [])],
             stdout=log, stderr=subprocess.STDOUT)
        (making / "etc/apt/apt.conf.d/99coercion-valid-until").write_text('Acquire::Check-Valid-Until "false";\n')
        (making / ".coercion-ready").write_text(self.release + "\n")
        if self.root.exists():
            self._remove_unmounted(self.root)
        making.rename(self.root)

    def _remove_unmounted(self, path: Path) -> None:
        for sub in ("dev/shm", "dev/pts", "dev", "proc"):
            if os.path.ismount(path / sub):
                raise RuntimeError(f"{path / sub} is still mounted: not removing {path}")
        shutil.rmtree(path)

    def copy_project(self) -> None:
        """The project's files (tracked and new, not ignored) as a fresh copy in COPY; the
        virtual environment and var/ of the last run stay (as on a machine that pulls)."""
        target = self.root / COPY.lstrip("/")
        aside = self.root / "root" / ".coercion-kept"
        if aside.exists():
            shutil.rmtree(aside)
        aside.mkdir(parents=True)
        for name in KEPT:
            if (target / name).exists():
                (target / name).rename(aside / name)
        if target.exists():
            shutil.rmtree(target)  # under /root: no mount point in it
        target.mkdir(parents=True)
        for name in KEPT:
            if (aside / name).exists():
                (aside / name).rename(target / name)
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                check=True, capture_output=True).stdout.decode().split("\0")
        for name in filter(None, listed):
            source = REPO / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)

    def prepare(self) -> None:
        """What a run needs inside, written anew each time (the host's may have changed)."""
        etc = self.root / "etc"
        shutil.copy2("/etc/resolv.conf", etc / "resolv.conf")
        if HOST_CA.exists():
            shutil.copy2(HOST_CA, self.root / INSIDE_CA.lstrip("/"))
        if not (etc / "hostid").exists():
            (etc / "hostid").write_bytes(os.urandom(4))

    # -- using it -------------------------------------------------------------------------

    @contextlib.contextmanager
    def mounted(self):
        mounts = [("proc", "proc", ["-t", "proc", "proc"]), ("dev", "dev", ["--bind", "/dev"]),
                  ("dev/pts", "devpts", ["--bind", "/dev/pts"]), ("dev/shm", "shm", ["-t", "tmpfs", "shm"])]
        done: list[Path] = []
        try:
            for sub, _, options in mounts:
                point = self.root / sub
                point.mkdir(parents=True, exist_ok=True)
                if not os.path.ismount(point):
                    _run(["mount", *options, str(point)])
                    done.append(point)
            yield self
        finally:
            for point in reversed(done):
                if subprocess.run(["umount", str(point)]).returncode != 0:
                    subprocess.run(["umount", "-l", str(point)])

    def environment(self, **more) -> dict:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "TCP_NODELAY": "1",
               "CI": os.environ.get("CI", "")}
        if (self.root / INSIDE_CA.lstrip("/")).exists():
            env.update(PIP_CERT=INSIDE_CA, SSL_CERT_FILE=INSIDE_CA, REQUESTS_CA_BUNDLE=INSIDE_CA)
        env.update({k: str(v) for k, v in more.items()})
        return env

    def command(self, script: str) -> list[str]:
        """``script`` run by bash inside, in the project's copy."""
        return ["chroot", str(self.root), "/bin/bash", "-c", f"cd {COPY} && {script}"]

    def run(self, script: str, log, timeout: float = 1800, **env) -> int:
        return subprocess.run(self.command(script), stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                              env=self.environment(**env)).returncode

    def popen(self, script: str, log, **env) -> subprocess.Popen:
        return subprocess.Popen(self.command(f"exec {script}"), stdout=log, stderr=subprocess.STDOUT,
                                env=self.environment(**env), start_new_session=True)

    def path(self, inside: str) -> Path:
        """A path inside, seen from the host."""
        return self.root / inside.lstrip("/")


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""



# -- one release's checks, in the background --------------------------------------------------
# They take minutes (apt, pip, Orthanc), mostly waiting on the network and the disk: the suite
# starts them when it has collected its tests (conftest.py) and they run beside the rest of it;
# the tests of tests/test_platforms.py wait for their outcome.

STEPS = {"trixie": ("first-command", "integration"), "forky": ("first-command", "integration", "image")}
_QUICK_START = threading.Lock()  # the quick start's stand-in peer takes orthanc.json's port 11112


@dataclass
class Outcome:
    ok: bool
    message: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PlatformRun:
    release: str
    logs: Path
    outcomes: dict = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    processes: list = field(default_factory=list)
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "PlatformRun":
        threading.Thread(target=self._run, name=f"platform-{self.release}", daemon=True).start()
        return self

    def wait(self, step: str, timeout: float = 3600) -> Outcome:
        deadline = time.monotonic() + timeout
        while step not in self.outcomes and not self.done.is_set() and time.monotonic() < deadline:
            time.sleep(1)
        return self.outcomes.get(step) or Outcome(False, f"{self.release}: {step} did not run (see {self.logs})")

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            running = [p for p in self.processes if p.poll() is None]  # never a reaped (reused) pid
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self.done.wait(600)  # the chroot is unmounted on the way out

    def _run(self) -> None:
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            box = Chroot(self.release)
            CACHE.mkdir(parents=True, exist_ok=True)
            # One test session at a time in a release's chroot (its copy and mounts are shared).
            exclusive = (CACHE / f"{self.release}.lock").open("w")
            fcntl.flock(exclusive, fcntl.LOCK_EX)
            with (self.logs / "debootstrap.log").open("wb") as log:
                box.ensure(log)
            box.copy_project()
            box.prepare()
            with exclusive, box.mounted():
                for step in STEPS[self.release]:
                    if self.stopping:
                        break
                    try:
                        getattr(self, "_" + step.replace("-", "_"))(box)
                        self.outcomes[step] = Outcome(True)
                    except Exception as exc:  # the step's own words, for its test to show
                        self.outcomes[step] = Outcome(False, f"{type(exc).__name__}: {exc}")
        except Exception:
            message = traceback.format_exc()
            for step in STEPS[self.release]:
                self.outcomes.setdefault(step, Outcome(False, f"{self.release}: the chroot failed:\n{message}"))
        finally:
            self.done.set()

    def _popen(self, box: "Chroot", script: str, log, **env) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise RuntimeError("the test session is ending")
            process = box.popen(script, log, **env)
            self.processes.append(process)
        return process

    def _run_inside(self, box: "Chroot", script: str, log_name: str, timeout: float, **env) -> int:
        with (self.logs / log_name).open("wb") as log:
            process = self._popen(box, script, log, **env)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
                raise AssertionError(f"{script!r} took longer than {timeout} s:\n{tail(self.logs / log_name)}")

    # -- the steps --------------------------------------------------------------------------

    def _first_command(self, box: "Chroot") -> None:
        """The README's first command from a fresh copy, then its quick start against it."""
        with _QUICK_START:
            http, dicom, mpps = free_port(), free_port(), free_port()
            log_path = self.logs / "install-and-serve.log"
            with log_path.open("wb") as log:
                serving = self._popen(box, f"bash plugin/scripts/install-and-serve.sh --http-port {http} "
                                           f"--dicom-port {dicom} --mpps-port {mpps}", log)
            try:
                auth = _wait_for_orthanc(box, serving, http, log_path)
                system = requests.get(f"http://127.0.0.1:{http}/system", auth=auth, timeout=10).json()
                assert requests.get(f"http://127.0.0.1:{http}/patients", timeout=10).status_code == 401, \
                    "the REST API answered without a credential"
                quick = self.logs / "quick-start.log"
                status = self._run_inside(box, f"bash tests/platforms_quickstart.sh {http} {dicom}", "quick-start.log",
                                          600)
                assert status == 0, tail(quick)
                answers = dict(line.split("=", 1) for line in quick.read_text().splitlines()
                               if line.startswith("RESULT "))
                patients = json.loads(answers["RESULT patients"])
                assert patients and all(len(p["MainDicomTags"]["PatientID"]) == 26 for p in patients), patients
                assert all(not p["MainDicomTags"].get("PatientName") for p in patients), "a name was kept"
                assert json.loads(answers["RESULT send"])["Coercion"]["CoercedInstancesCount"] == 1
                assert answers["RESULT received-patient-id"] != answers["RESULT original-patient-id"]
                (self.logs / "orthanc-version").write_text(system["Version"])
            finally:
                _end(serving)

    def _integration(self, box: "Chroot") -> None:
        """The README's test command on the integration tests of every exchange and the
        side-by-side parity tests, against this release's own Orthanc."""
        status = self._run_inside(box, f"bash plugin/scripts/test.sh -q -p no:randomly {' '.join(INTEGRATION)}",
                                  "tests.log", 2400, COERCION_PLATFORMS="none")
        assert status == 0, tail(self.logs / "tests.log", 120)

    def _image(self, box: "Chroot") -> None:
        """docker/install.sh, the Dockerfile's steps, on Debian testing's Orthanc 1.13.0 and
        orthanc-python 7.1 (the orthancteam image's): the plugin loads from the venv it makes
        and coerces what the image's configuration says."""
        status = self._run_inside(box, f"sh docker/install.sh {COPY}", "docker-install.log", 1500,
                                  COERCION_VENV="/opt/coercion/venv")
        assert status == 0, tail(self.logs / "docker-install.log")
        http, dicom, mpps = free_port(), free_port(), free_port()
        work = "/root/image-run"
        config = json.loads((box.path(COPY) / "docker" / "coercion.json").read_text())
        secret_dir = box.path(work)
        if secret_dir.exists():
            subprocess.run(["rm", "-r", "--one-file-system", str(secret_dir)], check=True)
        secret_dir.mkdir(parents=True)
        (secret_dir / "site.key").write_bytes(os.urandom(48))
        (secret_dir / "linkage.token").write_text("linkage-token-0123456789abcdef\n")
        (secret_dir / "admin.token").write_text("admin-token-0123456789abcdef\n")
        config["Coercion"].update(RulesDirectory=f"{COPY}/rules", SecretFile=f"{work}/site.key",
                                  LinkageDatabase=f"{work}/linkage.sqlite", LinkageTokenFile=f"{work}/linkage.token",
                                  AdminTokenFile=f"{work}/admin.token", Mpps={"Port": mpps, "Host": "127.0.0.1"})
        config.update(HttpPort=http, DicomPort=dicom, StorageDirectory=f"{work}/storage",
                      IndexDirectory=f"{work}/storage", Plugins=["/usr/share/orthanc/plugins/libOrthancPython.so"],
                      RemoteAccessAllowed=False, AuthenticationEnabled=True,
                      RegisteredUsers={"coercion": "image-password-0123456789"},
                      PythonScript=f"{COPY}/plugin/orthanc_entry.py",
                      DicomModalities={"research-ct": {"AET": "RESEARCH_CT", "Host": "127.0.0.1", "Port": free_port(),
                                                       "AllowGet": False}})
        (secret_dir / "orthanc.json").write_text(json.dumps(config))
        orthanc_log = self.logs / "image-orthanc.log"
        auth = ("coercion", "image-password-0123456789")
        with orthanc_log.open("wb") as log:
            orthanc = self._popen(box, f"/usr/sbin/Orthanc {work}/orthanc.json", log, COERCION_VENV="/opt/coercion/venv")
        try:
            for _ in range(300):
                assert orthanc.poll() is None, tail(orthanc_log)
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"http://127.0.0.1:{http}/system", auth=auth, timeout=2).ok:
                        break
                time.sleep(0.2)
            status = self._run_inside(
                box, "storescu -aet RESEARCH_CT -aec ORTHANC 127.0.0.1 "
                     f"{dicom} \"$(/opt/coercion/venv/bin/python -c "
                     "'from pydicom.data import get_testdata_file as f; print(f(\"CT_small.dcm\"))')\"",
                "image-store.log", 120, TCP_NODELAY="1")
            assert status == 0, tail(self.logs / "image-store.log") + tail(orthanc_log)
            patients = requests.get(f"http://127.0.0.1:{http}/patients?expand", auth=auth, timeout=10).json()
            assert [len(p["MainDicomTags"]["PatientID"]) for p in patients] == [26], patients
            assert "SDK features found" in orthanc_log.read_text(errors="replace"), tail(orthanc_log)
        finally:
            _end(orthanc)


def _wait_for_orthanc(box: "Chroot", serving: subprocess.Popen, http: int, log_path: Path) -> tuple[str, str]:
    """The REST credential, once the Orthanc the first command started answers with it."""
    credential = box.path(f"{COPY}/var/rest.credential")
    deadline = time.monotonic() + 1500  # the first run installs Orthanc and builds the venv
    while time.monotonic() < deadline:
        assert serving.poll() is None, f"the first command stopped:\n{tail(log_path)}"
        with contextlib.suppress(requests.RequestException, OSError):
            user, _, password = credential.read_text().strip().partition(":") if credential.exists() else ("", "", "")
            if password and requests.get(f"http://127.0.0.1:{http}/system", auth=(user, password), timeout=2).ok:
                return user, password
        time.sleep(1)
    raise AssertionError(f"Orthanc did not answer:\n{tail(log_path)}")


def _end(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return  # ended and reaped: its pid may be another's now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


RUNS: dict[str, PlatformRun] = {}


def start_runs(releases, logs: Path) -> None:
    """Start the checks of ``releases`` in the background (once per session)."""
    for release in releases:
        if release not in RUNS:
            RUNS[release] = PlatformRun(release, logs / release).start()


def stop_runs() -> None:
    for run in RUNS.values():
        run.stop()
