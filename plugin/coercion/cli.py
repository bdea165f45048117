"""The ``coercion`` command line.

    coercion deidentify --uri URI --secret-file FILE INPUT... --out DIR [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .engine.pseudonyms import Keys, SecretError
from .engine.quiet import quiet_pydicom
from .engine.sniff import looks_like_dicom
from .engine.uri import URIError, parse_uri


def _is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as fp:
            return looks_like_dicom(fp.read(132))
    except OSError:
        return False


@dataclass
class Job:
    src: Path
    dst: Path
    display: str


@dataclass
class Result:
    display: str
    ok: bool
    size: int
    error: str = ""


def _collect(inputs: list[str], out: Path) -> tuple[list[Job], list[Result]]:
    """The DICOM files under the inputs, each with its output path; non-DICOM files as failures."""
    jobs: list[Job] = []
    skipped: list[Result] = []
    out_resolved = out.resolve()
    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            candidates = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                if Path(dirpath).resolve() == out_resolved:
                    dirnames[:] = []
                    continue
                candidates += [Path(dirpath) / f for f in sorted(filenames)]
            pairs = [(p, p.relative_to(root)) for p in candidates]
        elif root.is_file():
            pairs = [(root, Path(root.name))]
        else:
            skipped.append(Result(raw, False, 0, "no such file or folder"))
            continue
        for src, rel in pairs:
            if _is_dicom_file(src):
                jobs.append(Job(src, out / rel, str(src)))
            else:
                skipped.append(Result(str(src), False, 0, "not a DICOM file"))
    return jobs, skipped


_worker = None


def _init_worker(uri: str, secret: bytes) -> None:
    global _worker
    quiet_pydicom()
    from .engine.deidentify import Deidentifier

    _worker = Deidentifier(parse_uri(uri), Keys(secret))


def _run(job: Job) -> Result:
    from .engine.dicomio import (
        DicomError,  # loaded with the de-identifier, in the worker
    )

    try:
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        _worker.deidentify_file(job.src, job.dst)
        return Result(job.display, True, job.src.stat().st_size)
    except DicomError as exc:
        return Result(job.display, False, 0, f"corrupt or unsupported DICOM: {exc}")
    except OSError as exc:
        return Result(job.display, False, 0, f"{exc.strerror or exc}")
    except Exception as exc:  # one bad file must not stop the others
        return Result(job.display, False, 0, f"{type(exc).__name__}: {exc}")


PROGRESS_DELAY = 1.0  # seconds: short runs finish before a bar is drawn


def _progress(total: int, quiet: bool, stream=None):
    from tqdm import tqdm

    # Only long runs get a bar (delay), and only on a terminal (disable=None asks isatty).
    return tqdm(total=total, unit="file", delay=PROGRESS_DELAY, disable=True if quiet else None,
                file=stream or sys.stderr)


def deidentify_command(args: argparse.Namespace) -> int:
    try:
        uri = parse_uri(args.uri)
    except URIError as exc:
        print(f"coercion: bad --uri: {exc}", file=sys.stderr)
        return 2
    try:
        keys = Keys.from_file(args.secret_file) if args.secret_file else Keys.from_env()
    except SecretError as exc:
        print(f"coercion: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    jobs, failures = _collect(args.inputs, out)
    seen: dict[Path, str] = {}
    for job in jobs:
        if job.dst in seen:
            print(f"coercion: {job.display} and {seen[job.dst]} would both be written to "
                  f"{job.dst}; give them in separate runs", file=sys.stderr)
            return 2
        seen[job.dst] = job.display
    for failure in failures:
        print(f"{failure.display}: {failure.error}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    results: list[Result] = []
    jobs_n = max(1, args.jobs)
    with _progress(len(jobs), args.quiet) as bar:
        if jobs_n == 1 or len(jobs) < 2:
            _init_worker(str(uri), keys.secret)
            iterator = map(_run, jobs)
            pool = None
        else:
            from .engine import deidentify  # noqa: F401 (loaded once here: forked workers inherit it)

            pool = ProcessPoolExecutor(jobs_n, initializer=_init_worker, initargs=(str(uri), keys.secret))
            iterator = pool.map(_run, jobs, chunksize=max(1, min(32, len(jobs) // (jobs_n * 4) or 1)))
        try:
            for result in iterator:
                results.append(result)
                if not result.ok:
                    bar.write(f"{result.display}: {result.error}", file=sys.stderr)
                bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown()
    elapsed = time.perf_counter() - started
    done = [r for r in results if r.ok]
    failed = len(failures) + len(results) - len(done)
    size = sum(r.size for r in done)
    print(
        f"{len(done)} files de-identified, {size / 1e6:.1f} MB, {elapsed:.2f} s "
        f"({len(done) / elapsed if elapsed > 0 else 0:.0f} files/s), {failed} failed",
        file=sys.stderr,
    )
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coercion", description="De-identifying DICOM coercion")
    sub = parser.add_subparsers(dest="command", required=True)
    deid = sub.add_parser(
        "deidentify",
        help="de-identify DICOM files offline",
        description="De-identify files or folders (recursively; DICOM is recognised by content) "
        "into DIR, at the same relative paths.",
    )
    deid.add_argument("--uri", required=True, help="deidentify:Option,Option (deidentify: alone is the basic profile)")
    deid.add_argument("--secret-file", help="file holding the site secret (else COERCION_SECRET or COERCION_SECRET_FILE)")
    deid.add_argument("--out", required=True, help="output folder")
    deid.add_argument("--jobs", "-j", type=int, default=1, help="worker processes (default 1)")
    deid.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    deid.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    deid.set_defaults(func=deidentify_command)
    from .serve import add_parser as add_serve_parser

    add_serve_parser(sub)  # light: what `serve` checks is imported when it runs
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_pydicom()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
