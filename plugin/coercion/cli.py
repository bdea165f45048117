"""The ``coercion`` command line.

    coercion deidentify --uri URI --secret-file FILE INPUT... --out DIR [--jobs N] [--strict]
        [--pixel-text all|identifying] [--pixel-regions FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .engine.pseudonyms import Keys, SecretError
from .engine.quiet import quiet_pydicom
from .engine.sniff import looks_like_dicom
from .engine.uri import DeidentifyURI, Option, URIError, parse_uri

if TYPE_CHECKING:
    from .engine.pixels.settings import PixelSettings

MEDIA_STORAGE_DIRECTORY_STORAGE = b"1.2.840.10008.1.3.10"  # the SOP Class of a DICOMDIR
_LONG_META_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _media_storage_sop_class(head: bytes) -> bytes | None:
    """Media Storage SOP Class UID (0002,0002) from the file meta at the start of a Part 10
    file (always explicit VR little endian), read without pydicom."""
    pos = 132
    while pos + 8 <= len(head):
        group = int.from_bytes(head[pos:pos + 2], "little")
        element = int.from_bytes(head[pos + 2:pos + 4], "little")
        if group != 0x0002:
            return None
        vr = head[pos + 4:pos + 6]
        if vr in _LONG_META_VRS:
            length, start = int.from_bytes(head[pos + 8:pos + 12], "little"), pos + 12
        else:
            length, start = int.from_bytes(head[pos + 6:pos + 8], "little"), pos + 8
        if element == 0x0002:
            return head[start:start + length].rstrip(b"\x00 ")
        pos = start + length
    return None


def _sort(path: Path) -> str | None:
    """What a file is, from its first bytes: "dicom", "dicomdir" (not an instance) or None."""
    try:
        with path.open("rb") as fp:
            head = fp.read(1024)
    except OSError:
        return None
    if not looks_like_dicom(head[:132]):
        return None
    if head[128:132] == b"DICM" and _media_storage_sop_class(head) == MEDIA_STORAGE_DIRECTORY_STORAGE:
        return "dicomdir"
    return "dicom"


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


def _collect(inputs: list[str], out: Path) -> tuple[list[Job], list[Job], list[Result], list[Result]]:
    """The DICOM files under the inputs, each with its output path, the DICOMDIRs among them
    (not instances: rebuilt, never de-identified or copied), inputs that do not exist
    (failures), and files that are not DICOM (skipped)."""
    jobs: list[Job] = []
    dicomdirs: list[Job] = []
    missing: list[Result] = []
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
            missing.append(Result(raw, False, 0, "no such file or folder"))
            continue
        for src, rel in pairs:
            kind = _sort(src)
            if kind == "dicom":
                jobs.append(Job(src, out / rel, str(src)))
            elif kind == "dicomdir":
                dicomdirs.append(Job(src, out / rel, str(src)))
            else:
                skipped.append(Result(str(src), False, 0, "skipped: not a DICOM file"))
    return jobs, dicomdirs, missing, skipped


_worker = None


def _init_worker(uri: str, secret: bytes, pixels=None) -> None:
    global _worker
    quiet_pydicom()
    from .engine.deidentify import Deidentifier

    _worker = Deidentifier(parse_uri(uri), Keys(secret), pixels=pixels)


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


# Record keys that directory records require (PS3.3 F.5, Type 1) and the profile may have emptied
# in the instances: the record gets the dummy a D would write (the instance stays as it is).
_RECORD_KEYS = ("PatientID", "StudyDate", "StudyTime", "StudyID")


class _LeftOut(Exception):
    """Why a DICOMDIR is left out of the output: the message says it."""


def _rebuild_dicomdir(job: Job, written: dict, keys: Keys, retain_uids: bool) -> Result:
    """A new DICOMDIR for the de-identified files of the file-set ``job.src`` indexes, at the
    same place in the output, referencing them where they were written (their File IDs stay
    the input's). Its records come from the de-identified files only; nothing of the original
    DICOMDIR but the list of its files is used. Left out (with the reason) when it cannot be
    done; it is never copied."""
    try:
        original_uid, listed = _read_fileset(job.src)
        members = _fileset_members(listed, written, job.dst.parent)
        _write_dicomdir(members, original_uid, keys, retain_uids, job.dst)
    except _LeftOut as exc:
        return Result(job.display, False, 0, f"DICOMDIR left out: {exc}")
    return Result(job.display, True, 0)


def _read_fileset(dicomdir: Path) -> tuple[str, list[Path]]:
    """The UID of the file-set a DICOMDIR indexes and the files it lists."""
    from pydicom.fileset import FileSet

    try:
        original = FileSet(dicomdir)
        listed = [Path(instance.path).resolve() for instance in original]
        return str(original.UID), listed
    except Exception as exc:  # not a readable file-set: nothing to rebuild it from
        raise _LeftOut(f"it cannot be read as a file-set ({type(exc).__name__})") from None


def _fileset_members(listed: list[Path], written: dict, root: Path) -> list[tuple[Path, Path]]:
    """The listed files de-identified in this run, each where it was written and with its File
    ID there (from ``root``, the DICOMDIR's folder in the output)."""
    from pydicom.fileset import is_conformant_file_id

    members: list[tuple[Path, Path]] = []
    for src in listed:
        dst = written.get(src)
        if dst is None:
            continue  # not de-identified in this run: not in the new file-set
        try:
            file_id = dst.relative_to(root)
        except ValueError:
            raise _LeftOut(f"{src} is not in the DICOMDIR's folder") from None
        if not is_conformant_file_id(file_id):
            raise _LeftOut(f"{dst} is not a valid File ID (PS3.10 8.5: at most 8 components of "
                           "at most 8 characters A-Z, 0-9 and _)")
        members.append((dst, file_id))
    if not members:
        raise _LeftOut("none of the files it lists was de-identified in this run")
    return members


def _write_dicomdir(members: list[tuple[Path, Path]], original_uid: str, keys: Keys, retain_uids: bool,
                    dst: Path) -> None:
    """Write the DICOMDIR of ``members`` to ``dst``, by way of two folders of scratch beside it.

    pydicom's FileSet makes the records (from headers: the pixel data is not needed) and writes
    them with its own File IDs, which are then pointed at the files where the output has them.
    """
    built = Path(tempfile.mkdtemp(prefix=".coercion-dicomdir-", dir=dst.parent))
    placed = Path(tempfile.mkdtemp(prefix=".coercion-dicomdir-", dir=dst.parent))
    try:
        file_ids = _stage_fileset(members, original_uid if retain_uids else keys.uid(original_uid), built)
        _point_records(built, placed, file_ids, dst)
    except _LeftOut:
        raise
    except Exception as exc:  # one file-set must not stop the others (its message may quote values)
        raise _LeftOut(f"it could not be written ({type(exc).__name__})") from None
    finally:
        shutil.rmtree(built, ignore_errors=True)
        shutil.rmtree(placed, ignore_errors=True)


def _stage_fileset(members: list[tuple[Path, Path]], uid: str, built: Path) -> dict[str, Path]:
    """Write a file-set of ``members`` into ``built``, as pydicom's FileSet names its files:
    the File ID in the output of each SOP Instance UID."""
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    from .engine.values import DUMMY_STRINGS

    fileset = FileSet()
    fileset.UID = uid
    file_ids = {}
    for dst, file_id in members:
        ds = dcmread(dst, stop_before_pixels=True)
        for keyword in _RECORD_KEYS:
            if keyword in ds and not ds[keyword].value:
                setattr(ds, keyword, DUMMY_STRINGS[ds[keyword].VR])
        try:
            fileset.add(ds)
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise _LeftOut(f"no directory record for {dst}: {exc}") from None
        file_ids[str(ds.SOPInstanceUID)] = file_id
    fileset.write(built)
    return file_ids


def _point_records(built: Path, placed: Path, file_ids: dict[str, Path], dst: Path) -> None:
    """Point the records of the file-set staged in ``built`` at the files where the output has
    them, and write its DICOMDIR to ``dst``: again by FileSet, with the offsets of the records
    recomputed (``placed`` holds the staged files meanwhile, at the output's File IDs)."""
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    dicomdir = dcmread(built / "DICOMDIR")
    for record in dicomdir.DirectoryRecordSequence:
        if "ReferencedFileID" in record:
            staged = built.joinpath(*record.ReferencedFileID)
            file_id = file_ids[str(record.ReferencedSOPInstanceUIDInFile)]
            (placed / file_id).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, placed / file_id)
            parts = list(file_id.parts)
            record.ReferencedFileID = parts if len(parts) > 1 else parts[0]
    shutil.copyfile(built / "DICOMDIR", placed / "DICOMDIR")  # as written: valid if nothing moved
    dicomdir.filename = str(placed / "DICOMDIR")
    FileSet(dicomdir).write(use_existing=True)
    os.replace(placed / "DICOMDIR", dst)


PROGRESS_DELAY = 1.0  # seconds: short runs finish before a bar is drawn


def _progress(total: int, quiet: bool, stream=None):
    from tqdm import tqdm

    # Only long runs get a bar (delay), and only on a terminal (disable=None asks isatty).
    return tqdm(total=total, unit="file", delay=PROGRESS_DELAY, disable=True if quiet else None,
                file=stream or sys.stderr)


class _UsageError(Exception):
    """A command line that cannot run (exit status 2); the message says why."""


def deidentify_command(args: argparse.Namespace) -> int:
    """``coercion deidentify``: exit status 0, 1 if a file failed, 2 if the command line cannot run."""
    try:
        uri, keys, pixels = _deidentify_settings(args)
        out = Path(args.out)
        jobs, dicomdirs, failures, skipped = _collect(args.inputs, out)
        if args.strict:  # a file that is not DICOM is a failure too
            failures, skipped = failures + skipped, []
        _check_destinations(jobs + dicomdirs)
    except _UsageError as exc:
        print(f"coercion: {exc}", file=sys.stderr)
        return 2
    for failure in failures + skipped:
        print(f"{failure.display}: {failure.error}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    results = _deidentify_files(jobs, str(uri), keys.secret, pixels, max(1, args.jobs), args.quiet)
    written = {job.src.resolve(): job.dst for job, result in zip(jobs, results) if result.ok}
    rebuilt = 0
    for job in dicomdirs:
        result = _rebuild_dicomdir(job, written, keys, Option.RetainUIDsOption in uri)
        if result.ok:
            rebuilt += 1
        else:
            failures.append(result)
            print(f"{result.display}: {result.error}", file=sys.stderr)
    return _summarize(results, failures, skipped, rebuilt, time.perf_counter() - started)


def _deidentify_settings(args: argparse.Namespace) -> tuple[DeidentifyURI, Keys, PixelSettings | None]:
    """The profile, the keys and the pixel settings the command line asks for."""
    try:
        uri = parse_uri(args.uri)
    except URIError as exc:
        raise _UsageError(f"bad --uri: {exc}") from None
    try:
        keys = Keys.from_file(args.secret_file) if args.secret_file else Keys.from_env()
    except SecretError as exc:
        raise _UsageError(str(exc)) from None
    return uri, keys, _pixel_settings(args, uri)


def _pixel_settings(args: argparse.Namespace, uri: DeidentifyURI) -> PixelSettings | None:
    """How Clean Pixel Data cleans, if --pixel-text or --pixel-regions says it (None: the default)."""
    if not (args.pixel_text or args.pixel_regions):
        return None
    if Option.CleanPixelDataOption not in uri:
        raise _UsageError("--pixel-text and --pixel-regions need CleanPixelDataOption in --uri")
    from .engine.pixels.policy import NO_REGIONS, RegionsError, load_regions
    from .engine.pixels.settings import PixelSettings

    try:
        regions = load_regions(args.pixel_regions) if args.pixel_regions else NO_REGIONS
    except RegionsError as exc:
        raise _UsageError(f"bad --pixel-regions: {exc}") from None
    return PixelSettings(args.pixel_text or "all", regions)


def _check_destinations(jobs: list[Job]) -> None:
    """Refuse inputs that would be written to the same output path: one would overwrite the other."""
    seen: dict[Path, str] = {}
    for job in jobs:
        if job.dst in seen:
            raise _UsageError(f"{job.display} and {seen[job.dst]} would both be written to {job.dst}; "
                              "give them in separate runs")
        seen[job.dst] = job.display


def _deidentify_files(jobs: list[Job], uri: str, secret: bytes, pixels: PixelSettings | None, workers: int,
                      quiet: bool) -> list[Result]:
    """De-identify the files, here or in ``workers`` processes: their results in the order of
    ``jobs``, failures shown as they come and progress on long runs."""
    results: list[Result] = []
    with _progress(len(jobs), quiet) as bar:
        if workers == 1 or len(jobs) < 2:
            _init_worker(uri, secret, pixels)
            iterator = map(_run, jobs)
            pool = None
        else:
            from .engine import deidentify  # noqa: F401 (loaded once here: forked workers inherit it)

            pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(uri, secret, pixels))
            iterator = pool.map(_run, jobs, chunksize=max(1, min(32, len(jobs) // (workers * 4) or 1)))
        try:
            for result in iterator:
                results.append(result)
                if not result.ok:
                    bar.write(f"{result.display}: {result.error}", file=sys.stderr)
                bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown()
    return results


def _summarize(results: list[Result], failures: list[Result], skipped: list[Result], rebuilt: int,
               elapsed: float) -> int:
    """Print what the run did, and return its exit status: 1 if anything failed."""
    done = [r for r in results if r.ok]
    failed = len(failures) + len(results) - len(done)
    size = sum(r.size for r in done)
    print(
        f"{len(done)} files de-identified, {size / 1e6:.1f} MB, {elapsed:.2f} s "
        f"({len(done) / elapsed if elapsed > 0 else 0:.0f} files/s), {failed} failed, {len(skipped)} skipped"
        + (f", {rebuilt} DICOMDIR rebuilt" if rebuilt else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


def check_rules_command(args: argparse.Namespace) -> int:
    import json

    from .checks import exit_status
    from .checks import check_rules as check

    config_path = Path(args.config)
    config: dict = {}
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            print(f"coercion: the configuration {config_path} cannot be read: {exc}", file=sys.stderr)
            return 2
    elif args.config != "orthanc.json":
        print(f"coercion: the configuration {config_path} does not exist", file=sys.stderr)
        return 2
    directory = args.directory or (config.get("Coercion") or {}).get("RulesDirectory")
    if not directory:
        print("coercion: name the rules folder (DIR) or a configuration with Coercion.RulesDirectory", file=sys.stderr)
        return 2
    if not args.directory and not Path(directory).is_absolute():
        directory = str(config_path.parent / directory)  # as `coercion serve` resolves it
    findings = check(directory, config)
    for finding in findings:
        print(finding)
    errors = sum(f.level == "error" for f in findings)
    print(f"{directory}: {errors} error(s), {len(findings) - errors} warning(s)", file=sys.stderr)
    return exit_status(findings)


def build_parser() -> argparse.ArgumentParser:
    from .engine.implementation import VERSION

    parser = argparse.ArgumentParser(prog="coercion", description="De-identifying DICOM coercion")
    parser.add_argument("--version", action="version", version=f"coercion {VERSION}")
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
    deid.add_argument("--strict", action="store_true",
                      help="count files that are not DICOM as failures (default: skipped, exit status 0)")
    deid.add_argument("--pixel-text", choices=("all", "identifying"),
                      help="with CleanPixelDataOption: mask every text region (all, the default) or only text "
                      "that identifies (identifying)")
    deid.add_argument("--pixel-regions", metavar="FILE",
                      help="with CleanPixelDataOption: the site's regions of burned-in text by header signature "
                      "(the format of rules/pixel-regions.yaml)")
    deid.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    deid.set_defaults(func=deidentify_command)
    check = sub.add_parser(
        "check-rules", help="check rules against an Orthanc configuration",
        description="Load the rules folder and check it against orthanc.json: errors (rules that do not load, "
        "peers that may C-GET around outgoing rules unless Coercion.UnsafeCGetBypassesRules accepts it: the "
        "plugin refuses to start so) and warnings (rules that can never match, outgoing rules for unknown "
        "modalities). Exit status 0: nothing found; 1: warnings; 2: errors.")
    check.add_argument("directory", nargs="?", metavar="DIR",
                       help="the rules folder (default: Coercion.RulesDirectory of the configuration)")
    check.add_argument("--config", default="orthanc.json", help="the Orthanc configuration (default orthanc.json)")
    check.set_defaults(func=check_rules_command)
    from .serve import add_parser as add_serve_parser

    add_serve_parser(sub)  # light: what `serve` checks is imported when it runs
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_pydicom()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
