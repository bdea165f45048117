"""``coercion serve``: Orthanc in the foreground, with the plugin, from orthanc.json plus overrides.

The configuration file is never edited: the overrides are applied to a copy written to a
private temporary folder, relative paths are resolved against the folder of orthanc.json,
and Orthanc is started with that copy. The secret and the rules are checked first, so a bad
set-up fails here with a clear message rather than inside Orthanc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from . import configuration
from .engine.pseudonyms import Keys, SecretError
from .stores.locations import is_url

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "orthanc.json"


def _overrides() -> list[tuple[str, str, tuple[str, ...], bool]]:
    """(option, environment variable, configuration key path, is a port) of every override:
    Orthanc's own settings and the Coercion keys that have an option (configuration.py)."""
    found = [(option, variable, path, path[-1].endswith("Port"))
             for path, variable, option, _ in configuration.ORTHANC_OVERRIDES]
    found += [(key.option, key.variable, ("Coercion", key.name), False) for key in configuration.KEYS if key.option]
    return found


class ServeError(RuntimeError):
    pass


def _get(config: dict, path: tuple):
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return None
        config = config[key]
    return config


def _set(config: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        config = config.setdefault(key, {})
    config[path[-1]] = value


def effective_configuration(args: argparse.Namespace, environ: dict) -> dict:
    config_path = Path(args.config).resolve()
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ServeError(f"configuration file {config_path} does not exist") from None
    except ValueError as exc:
        raise ServeError(f"configuration file {config_path} is not valid JSON: {exc}") from None
    base = config_path.parent
    for path in configuration.path_keys():  # Orthanc resolves relative paths against its working folder
        value = _get(config, path)
        if isinstance(value, str) and value and not is_url(value) and not Path(value).is_absolute():
            _set(config, path, str(base / value))
    config["Plugins"] = [p if Path(p).is_absolute() else str(base / p) for p in config.get("Plugins", [])]
    for option, variable, path, port in _overrides():
        value = getattr(args, option.removeprefix("--").replace("-", "_"), None) or environ.get(variable)
        if value is None:
            continue
        if port:
            try:
                value = int(value)
            except ValueError:
                raise ServeError(f"{option} must be a port number, got {value!r}") from None
        elif not is_url(value):  # a postgresql:// URL is never a path
            value = str(Path(value).resolve())
        _set(config, path, value)
        if path == ("StorageDirectory",):
            config["IndexDirectory"] = value
    _add_rest_credential(config, environ)
    return config


def _add_rest_credential(config: dict, environ: dict) -> None:
    """Orthanc's REST API user from Coercion.RestCredentialFile (or COERCION_REST_CREDENTIAL_FILE),
    added to RegisteredUsers of the configuration Orthanc starts with: never in orthanc.json."""
    path = configuration.read(config, environ)["RestCredentialFile"]
    if not path:
        return
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ServeError(f"Orthanc's REST API credential file {path} does not exist: the README's first command "
                         "creates it (var/rest.credential), or write one line 'user:password' there (owner-only)"
                         ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"Orthanc's REST API credential file {path} cannot be read: {type(exc).__name__}") from None
    user, _, password = text.partition(":")
    if "\n" in text or not user or len(password) < 16 or any(c.isspace() for c in user):
        raise ServeError(f"Orthanc's REST API credential file {path} must hold one line 'user:password', with a "
                         "password of at least 16 characters")
    config["RegisteredUsers"] = {**(config.get("RegisteredUsers") or {}), user: password}
    config.setdefault("AuthenticationEnabled", True)


def _check_worklist_plugins(config: dict) -> None:
    """Orthanc lets one plugin answer worklists: with worklists enabled, the coercion plugin
    serves them, and Orthanc's ModalityWorklists sample plugin must not be loaded too."""
    worklists = config.get("Worklists") or {}
    if not (isinstance(worklists, dict) and worklists.get("Enable") is True):
        return
    for entry in config.get("Plugins") or []:
        path = Path(entry)
        candidates = list(path.iterdir()) if path.is_dir() else [path]
        if any("modalityworklists" in candidate.name.lower() for candidate in candidates):
            raise ServeError(f"the plugin list loads Orthanc's ModalityWorklists sample plugin ({entry}), and the "
                             "coercion plugin serves the worklists (\"Worklists\": {\"Enable\": true}): Orthanc "
                             "lets only one plugin answer worklists; remove the sample plugin from \"Plugins\"")


def _check(config: dict, environ: dict) -> None:
    from .rules import (
        load_rules,  # YAML and pydicom's dictionary: not for `coercion deidentify`
    )

    _check_worklist_plugins(config)
    values = configuration.read(config, environ)
    if environ.get("COERCION_SECRET"):
        Keys.from_env({"COERCION_SECRET": environ["COERCION_SECRET"]})
    else:
        secret_file = values["SecretFile"]
        if not secret_file:
            raise ServeError("no site secret: give --secret-file, COERCION_SECRET_FILE or Coercion.SecretFile")
        Keys.from_file(secret_file)
    rules = values["RulesDirectory"]
    if not rules:
        raise ServeError("no rules folder: give --rules, COERCION_RULES or Coercion.RulesDirectory")
    load_rules(rules)
    for warning in exposed_files(config, environ) + exposed_storage(config):
        print(f"coercion serve: warning: {warning}", file=sys.stderr, flush=True)


def _sensitive_files(config: dict, environ: dict) -> list[tuple[str, Path]]:
    """(what, path) of the files that hold the secret, a credential or the stores, where the
    plugin will look for them (configuration.py: the same table as the plugin's)."""
    values = configuration.read(config, environ)
    found = configuration.secret_files(values, environ)
    for what, store in configuration.stores(values):
        if not is_url(store):  # a database server's files are its own
            found += [(what, f"{store}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]
    return [(what, Path(path)) for what, path in found]


def exposed_files(config: dict, environ: dict) -> list[str]:
    """A warning for each sensitive file that group or others may read or write. Orthanc still
    starts: the operator may have a reason (a group that backs the files up), but should know."""
    warnings = []
    for what, path in _sensitive_files(config, environ):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # not there (yet): the plugin creates the stores owner-only
        if mode & 0o066:
            warnings.append(f"{path} ({what}) has mode {mode:04o}: {_who_can(mode)} it; make it owner-only "
                            f"(chmod 600 {path})")
    return warnings


def _who_can(mode: int) -> str:
    """"group and others can read", ... of a mode with some of 0o066."""
    classes = [name for name, bits in (("group", 0o060), ("others", 0o006)) if mode & bits]
    access = [name for name, bits in (("read", 0o044), ("write", 0o022)) if mode & bits]
    return f"{' and '.join(classes)} can {' and '.join(access)}"


def storage_folders(config: dict) -> list[Path]:
    """Orthanc's StorageDirectory and IndexDirectory (the storage's when not set), as configured."""
    storage = config.get("StorageDirectory")
    index = config.get("IndexDirectory") or storage
    return list(dict.fromkeys(Path(p) for p in (storage, index) if isinstance(p, str) and p))


def exposed_storage(config: dict) -> list[str]:
    """A warning for each existing storage folder that group or others may read or write, and
    one for its first-level entries they may (Orthanc keeps every original there, and its
    index). Cheap: the folder and one level; what Orthanc writes below them under one umask
    has the same modes. A folder made by serve is owner-only, and Orthanc runs under umask 077."""
    warnings = []
    for folder in storage_folders(config):
        try:
            mode = stat.S_IMODE(folder.stat().st_mode)
            with os.scandir(folder) as entries:
                exposed = []
                for entry in entries:
                    try:
                        entry_mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                    except OSError:
                        continue
                    if entry_mode & 0o066 and not entry.is_symlink():
                        exposed.append((entry.path, entry_mode))
        except OSError:
            continue  # not there (yet): serve makes it owner-only
        fix = f"make it owner-only (chmod -R go-rwx {folder})"
        if mode & 0o066:
            warnings.append(f"{folder} (Orthanc's storage) has mode {mode:04o}: {_who_can(mode)} it; {fix}")
        if exposed:
            path, entry_mode = min(exposed)
            warnings.append(f"{len(exposed)} entries of {folder} (Orthanc's storage) can be read or written by "
                            f"group or others, e.g. {path} (mode {entry_mode:04o}: {_who_can(entry_mode)} it); {fix}")
    return warnings


def _check_ports(config: dict) -> None:
    """A port already taken (Debian's own Orthanc service listens on 8042 and 4242) would make
    Orthanc stop with a cryptic message: say which port and what to do instead."""
    for key, option, variable in (("HttpPort", "--http-port", "COERCION_HTTP_PORT"),
                                  ("DicomPort", "--dicom-port", "COERCION_DICOM_PORT")):
        port = config.get(key)
        if not isinstance(port, int):
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                raise ServeError(
                    f"{key} {port} is already in use (by Debian's orthanc service? 'systemctl stop orthanc'); "
                    f"choose another with {option} or {variable}"
                ) from None


def _make_owner_only(folder: Path) -> None:
    """Make a folder (and its missing parents) 0700; one that exists is left as it is (warned of)."""
    previous = os.umask(0o077)  # serve is single-threaded here
    try:
        folder.mkdir(parents=True, exist_ok=True)
    finally:
        os.umask(previous)


def _in_orthanc_process() -> None:
    """Before Orthanc runs: what it writes (instances, its index, folders) is owner-only
    (umask 077: files 0600, folders 0700), and it dies with this process."""
    os.umask(0o077)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: Orthanc gets SIGTERM if this process dies, even by SIGKILL (no orphan server)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def serve_command(args: argparse.Namespace) -> int:
    from .rules import RuleError

    environ = dict(os.environ)
    try:
        config = effective_configuration(args, environ)
        _check(config, environ)
        _check_ports(config)
        orthanc = args.orthanc or shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not Path(orthanc).exists():
            raise ServeError("Orthanc is not installed (the Debian package 'orthanc'); see README.md")
    except (ServeError, SecretError, RuleError) as exc:
        print(f"coercion serve: {exc}", file=sys.stderr)
        return 78
    for folder in storage_folders(config):  # owner-only when made here; Orthanc writes under umask 077
        _make_owner_only(folder)
    linkage = configuration.read(config, environ)["LinkageDatabase"]
    if linkage and not is_url(linkage):  # the store's folder, owner-only when made here (its file: 0600)
        Path(linkage).parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    run_dir = Path(tempfile.mkdtemp(prefix="coercion-serve-"))  # 0700
    effective = run_dir / "orthanc.json"
    # It may hold the REST API's password (RegisteredUsers): owner-only, like the folder.
    effective.touch(mode=0o600)
    effective.write_text(json.dumps(config, indent=2))
    env = dict(environ)
    env["TCP_NODELAY"] = "1"  # Debian's DCMTK stalls ~40 ms per DIMSE message without it
    # The embedded interpreter imports the package from the environment coercion runs in.
    paths = [sysconfig.get_paths()["purelib"], str(REPO / "plugin")]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["COERCION_VENV"] = sys.prefix
    print(f"coercion serve: Orthanc on http://127.0.0.1:{config.get('HttpPort')} and DICOM port "
          f"{config.get('DicomPort')} (AET {config.get('DicomAet', 'ORTHANC')}), rules from "
          f"{_get(config, ('Coercion', 'RulesDirectory'))}", file=sys.stderr, flush=True)
    process = subprocess.Popen([orthanc, *args.orthanc_args, str(effective)], env=env,
                               preexec_fn=_in_orthanc_process)

    def stop(signum, frame):
        if process.poll() is None:
            process.terminate()  # Orthanc shuts down cleanly on SIGTERM

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            try:
                code = process.wait()
                break
            except KeyboardInterrupt:
                stop(None, None)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return code


def add_parser(sub) -> None:
    serve = sub.add_parser(
        "serve",
        help="run Orthanc in the foreground with the coercion plugin",
        description="Start Orthanc with the plugin, using orthanc.json; every option below "
        "overrides it without editing it (and so does the environment variable named).",
    )
    serve.add_argument("--config", default=str(DEFAULT_CONFIG), help="Orthanc configuration (default: the repository's orthanc.json)")
    for path, variable, option, what in configuration.ORTHANC_OVERRIDES:
        serve.add_argument(option, type=int if path[-1].endswith("Port") else None,
                           help=f"{what}, {'.'.join(path)} ({variable})")
    for key in configuration.KEYS:
        if key.option:
            serve.add_argument(key.option, help=f"{key.help}, Coercion.{key.name} ({key.variable})")
    serve.add_argument("--orthanc", help="the Orthanc executable (default: Orthanc on PATH, /usr/sbin/Orthanc)")
    serve.add_argument("orthanc_args", nargs="*", help="extra arguments for Orthanc (after --), e.g. -- --verbose")
    serve.set_defaults(func=serve_command)
