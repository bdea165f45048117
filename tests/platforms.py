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
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("COERCION_CHROOTS", "/var/cache/coercion-chroots"))
MIRROR = os.environ.get("COERCION_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# debootstrap's script for a release it may not know by name (testing's, on Debian 12).
SCRIPTS = {"trixie": None, "forky": "/usr/share/debootstrap/scripts/sid"}
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
INSIDE_CA = "/etc/coercion-host-ca.crt"
COPY = "/root/coercion"  # the project inside
KEPT = (".venv", "var")  # kept from one run's copy to the next: pip's work is the slow part


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

