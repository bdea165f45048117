"""Issue 4's benchmarks in one run: forwarding throughput, then C-FIND latency.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_outgoing_bench.py

Runs ``run_forward_bench.py`` (a 300-instance series, plain vs coerced forwarding; target
>= 0.6x) and ``run_find_bench.py`` (1,000 studies, Orthanc's C-FIND SCP vs the plugin's for a
caller no rule matches; target within 1.5x), one after the other, with their defaults.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    for script in ("run_forward_bench.py", "run_find_bench.py"):
        print(f"\n## {script}\n", flush=True)
        status = subprocess.run([sys.executable, str(BENCH / script), *sys.argv[1:]]).returncode
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
