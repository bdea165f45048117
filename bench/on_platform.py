"""Run a benchmark command inside a Debian release's chroot (the one tests/platforms.py makes).

    sudo python3 bench/on_platform.py trixie "bash bench/setup.sh && bench/.venv/bin/python bench/run_ingest_bench.py"

The project's files are copied in afresh; the chroot's Orthanc is the release's own (installed
by the README's first command there: run the platform tests, or the first command, once). The
output goes to standard output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from platforms import RELEASES, Chroot, available  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", choices=RELEASES)
    parser.add_argument("command", help="a shell command, run in the project's copy inside")
    args = parser.parse_args()
    reason = available()
    if reason:
        parser.error(reason)
    box = Chroot(args.release)
    box.ensure(sys.stderr.buffer)
    box.copy_project()
    box.prepare()
    with box.mounted():
        sys.stdout.flush()
        return box.run(f"export TCP_NODELAY=1; {args.command}", sys.stdout.buffer, timeout=7200)


if __name__ == "__main__":
    sys.exit(main())
