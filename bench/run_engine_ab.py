"""Engine A/B: this checkout's engine against another checkout's, on the same series.

    bash bench/setup.sh && git worktree add /tmp/baseline HEAD~1
    bench/.venv/bin/python bench/run_engine_ab.py --baseline /tmp/baseline [--rounds 7]

Each round runs both engines once, in fresh processes and alternating which goes first, on the
300-instance CT series of run_engine_bench.py (a tmpfs): warm-up on 5 files, then the best of
two passes over the series. A change "within noise" shows a median ratio near 1.00x with the
per-round ratios on both sides of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from generate_ct import generate_ct_series  # noqa: E402

ONE_RUN = r"""
import os, sys, time, shutil
from pathlib import Path
from coercion import Deidentifier, Keys
files = sorted(Path(sys.argv[1]).glob("*.dcm")); out = Path(sys.argv[2]); uri = sys.argv[3]
deid = Deidentifier.from_uri(uri, Keys(b"b" * 32))
out.mkdir(parents=True, exist_ok=True)
for f in files[:5]:
    deid.deidentify_file(f, out / f.name)
best = float("inf")
for _ in range(2):
    started = time.perf_counter()
    for f in files:
        deid.deidentify_file(f, out / f.name)
    best = min(best, time.perf_counter() - started)
print(len(files) / best)
"""


def rate(plugin: Path, series: Path, out: Path, uri: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(plugin))
    result = subprocess.run([sys.executable, "-c", ONE_RUN, str(series), str(out), uri], env=env,
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, type=Path, help="the other checkout (its plugin/ is used)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--uri", default="deidentify:")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="coercion-ab-", dir=shm if shm.is_dir() else None))
    plugins = {"baseline": args.baseline.resolve() / "plugin", "this checkout": BENCH.parent / "plugin"}
    rates: dict[str, list[float]] = {name: [] for name in plugins}
    try:
        series = root / "series"
        generate_ct_series(series, args.count)
        for round_ in range(args.rounds):
            order = list(plugins) if round_ % 2 == 0 else list(reversed(plugins))
            for name in order:
                rates[name].append(rate(plugins[name], series, root / "out", args.uri))
                shutil.rmtree(root / "out", ignore_errors=True)
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f}/s" for n in plugins), file=sys.stderr,
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base, this = rates["baseline"], rates["this checkout"]
    ratios = [t / b for t, b in zip(this, base)]
    print(f"\n{args.count} instances, `{args.uri}`, {args.rounds} rounds, instances/s (best of 2 passes a round)\n")
    print("| engine | median | all rounds |")
    print("| --- | ---: | --- |")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.0f} | {', '.join(f'{v:.0f}' for v in values)} |")
    print(f"\nthis / baseline: median {statistics.median(this) / statistics.median(base):.2f}x; per round "
          f"{', '.join(f'{r:.2f}' for r in ratios)} (from {min(ratios):.2f}x to {max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
