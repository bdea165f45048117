"""The batch CLI as a whole process: `coercion deidentify` against dicognito's command line.

    bash bench/setup.sh && bench/.venv/bin/python bench/run_cli_bench.py [--rounds 5] [--baseline DIR]

What an administrator waits for: start-up, then the 300-instance CT series of
run_engine_bench.py (a tmpfs), one process each, --jobs 1. Interleaved rounds; medians.
"start-up" is the whole process on one file of the series (the file itself takes about 1 ms
of it). With --baseline, another checkout's CLI runs too (an A/B of the start-up). Bytecode is
cached as on an installed system (PYTHONDONTWRITEBYTECODE, set on the project's machine, would
make every start compile the project's modules again).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from generate_ct import generate_ct_series  # noqa: E402


def commands(tool: str, source: Path, out: Path, key: Path) -> list[str]:
    if tool == "dicognito":
        return [sys.executable, "-m", "dicognito", "--quiet", "--output-directory", str(out), str(source)]
    return [sys.executable, "-m", "coercion.cli", "deidentify", "--uri", "deidentify:", "--secret-file", str(key),
            "--quiet", "--out", str(out), str(source)]


def timed(tool: str, plugin: Path | None, source: Path, out: Path, key: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(plugin)) if plugin else dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules compiled once, not at every start
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(commands(tool, source, out, key), env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--baseline", type=Path, help="another checkout whose CLI runs too")
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="coercion-cli-", dir=shm if shm.is_dir() else None))
    tools = {"coercion (ours)": ("coercion", None), "dicognito": ("dicognito", None)}
    if args.baseline:
        tools["coercion (baseline)"] = ("coercion", args.baseline.resolve() / "plugin")
    results = {(name, kind): [] for name in tools for kind in ("start-up", "series")}
    try:
        series = root / "series"
        files = generate_ct_series(series, args.count)
        one = root / "one"
        one.mkdir()
        shutil.copy(files[0], one / files[0].name)
        key = root / "site.key"
        key.write_bytes(os.urandom(32))
        for name, (tool, plugin) in tools.items():  # warm the page cache and the bytecode
            timed(tool, plugin, one, root / "out", key)
        for round_ in range(args.rounds):
            for name, (tool, plugin) in tools.items():
                results[(name, "start-up")].append(timed(tool, plugin, one, root / "out", key))
                results[(name, "series")].append(timed(tool, plugin, series, root / "out", key))
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {results[(n, 'start-up')][-1]:.3f} s + "
                                                       f"{results[(n, 'series')][-1]:.2f} s" for n in tools),
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    median = {key: statistics.median(values) for key, values in results.items()}
    ours_series = median[("coercion (ours)", "series")]
    print(f"\nwhole processes, --jobs 1, {args.count} instances of the CT series, {args.rounds} interleaved rounds, "
          "medians (all rounds in brackets)\n")
    print("| tool | start-up (one file) s | series s | series instances/s | ours / tool (series) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in tools:
        s, t = median[(name, "start-up")], median[(name, "series")]
        print(f"| {name} | {s:.3f} ({', '.join(f'{v:.3f}' for v in results[(name, 'start-up')])}) | {t:.2f} "
              f"({', '.join(f'{v:.2f}' for v in results[(name, 'series')])}) | {args.count / t:.0f} | {t / ours_series:.2f}x |")


if __name__ == "__main__":
    main()
