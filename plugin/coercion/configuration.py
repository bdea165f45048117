"""The configuration in one table: orthanc.json's ``Coercion`` section and the environment.

Each key says where it is read (``Coercion.<Key>``), the environment variable that takes
precedence over it, its default, what kind of value it holds (a path resolved against
orthanc.json's folder, a store's location, a file that holds a secret...), the option of
``coercion serve`` that sets it, and what it is for. The service's settings, ``coercion serve``
(its options, the paths it resolves, the files it warns about) and the documentation's table
are read from here (tests/test_configuration.py compares them), so they cannot disagree.

Plain code: no Orthanc, no parsing of DICOM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .stores.forwards import LEASE_SECONDS
from .stores.locations import beside

# Kinds of value.
PATH = "path"  # a file or folder, resolved against orthanc.json's folder by coercion serve
LOCATION = "location"  # a store: an SQLite file (a path) or a postgresql:// URL
SECRET_FILE = "secret file"  # a path to a file that holds a secret: owner-only, warned about
NUMBER = "number"
TEXT = "text"
FLAG = "flag"
DAYS = "days"  # [low, high]
SECTION = "section"  # a section of its own


@dataclass(frozen=True)
class Key:
    name: str  # in the Coercion section
    variable: str | None  # the environment variable that takes precedence
    default: object  # a value, or a function of the values read before it
    kind: str
    option: str | None  # coercion serve's option that sets it
    what: str  # what it is, as messages name it
    help: str


# The acknowledgements that let the plugin start in a configuration it would otherwise refuse
# (checks.startup_refusals); each name says what the administrator accepts.
OPEN_REST_API_ACKNOWLEDGEMENT = "UnsafeOpenRestApiExposesOriginals"
CGET_ACKNOWLEDGEMENT = "UnsafeCGetBypassesRules"


def _beside_linkage(name: str) -> Callable[[dict], str]:
    return lambda values: beside(values["LinkageDatabase"], name)


KEYS: tuple[Key, ...] = (
    Key("RulesDirectory", "COERCION_RULES", None, PATH, "--rules", "the rules folder", "the rules folder (required)"),
    Key("SecretFile", "COERCION_SECRET_FILE", None, SECRET_FILE, "--secret-file", "the site secret",
        "the site secret, at least 32 bytes (COERCION_SECRET: the secret itself)"),
    Key("LinkageDatabase", "COERCION_LINKAGE_DB", "linkage.sqlite", LOCATION, "--linkage-db", "the linkage store",
        "the linkage store: an SQLite file or a postgresql:// URL"),
    Key("ForwardsDatabase", None, _beside_linkage("forwards.sqlite"), LOCATION, None, "the forwarding queue",
        "the forwarding queue (default: beside the linkage store)"),
    Key("MppsDatabase", None, _beside_linkage("mpps.sqlite"), LOCATION, None, "the MPPS store",
        "the MPPS store (default: beside the linkage store)"),
    Key("ActivityDatabase", None, _beside_linkage("activity.sqlite"), LOCATION, None, "the activity store",
        "statistics per rule and calling AE title (default: beside the linkage store)"),
    Key("LinkageTokenFile", "COERCION_LINKAGE_TOKEN_FILE", None, SECRET_FILE, None, "the linkage credential",
        "the re-identification credential (COERCION_LINKAGE_TOKEN: the token itself)"),
    Key("AdminTokenFile", "COERCION_ADMIN_TOKEN_FILE", None, SECRET_FILE, None, "the admin credential",
        "the administration credential (COERCION_ADMIN_TOKEN: the token itself)"),
    Key("RestCredentialFile", "COERCION_REST_CREDENTIAL_FILE", None, SECRET_FILE, None, "Orthanc's REST API credential",
        "Orthanc's REST API user, one line user:password, added to RegisteredUsers by coercion serve"),
    Key("DatabasePasswordFile", "COERCION_DATABASE_PASSWORD_FILE", None, SECRET_FILE, None, "the database password",
        "the password of postgresql:// stores (or PGPASSWORD)"),
    Key("TablesDirectory", None, None, PATH, None, "the tables",
        "a folder of the standard's tables read instead of the package's own"),
    Key("DateShiftWindow", None, [-1095, 1095], DAYS, None, "the date shift window", "the range of the keyed date shift, in days"),
    Key("SendBatchSize", None, 32, NUMBER, None, "the send batch size", "instances per association of a coerced send"),
    Key("NodeName", None, None, TEXT, None, "the node name",
        "this node's name among Orthancs sharing one archive (default: host, AE title and DICOM port)"),
    Key("ForwardLeaseSeconds", None, LEASE_SECONDS, NUMBER, None, "the forward lease",
        "how long a node's hold on a forward it sends lasts without renewal (at least 4)"),
    Key("Mpps", None, None, SECTION, None, "the MPPS SCP", "the MPPS SCP: Port (--mpps-port, COERCION_MPPS_PORT), Host, Aet..."),
    Key("Views", None, None, SECTION, None, "the de-identified DICOMweb views",
        "de-identified DICOMweb views: {name: {Rule, TokenFile, Users}} (QIDO-RS and WADO-RS in one outgoing rule's "
        "pseudonyms, under /coercion/dicom-web/{name}/)"),
    Key("AllowedOrigins", None, [], TEXT, None, "the allowed origins",
        "other origins whose pages may change state (a reverse proxy's public origin, a viewer), e.g. "
        "[\"https://pacs.example.org\"]"),
    Key(OPEN_REST_API_ACKNOWLEDGEMENT, None, False, FLAG, None, "the open REST API acknowledgement",
        "start although Orthanc's REST API asks for no credential (another plugin or proxy must)"),
    Key(CGET_ACKNOWLEDGEMENT, None, False, FLAG, None, "the C-GET acknowledgement",
        "start although a peer an outgoing rule names may C-GET originals"),
)
BY_NAME = {key.name: key for key in KEYS}

# Orthanc's own settings that coercion serve sets from its options (key path, variable, option).
ORTHANC_OVERRIDES: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("HttpPort",), "COERCION_HTTP_PORT", "--http-port", "HTTP port"),
    (("DicomPort",), "COERCION_DICOM_PORT", "--dicom-port", "DICOM port"),
    (("StorageDirectory",), "COERCION_STORAGE", "--storage", "storage and index folder"),
    (("Coercion", "Mpps", "Port"), "COERCION_MPPS_PORT", "--mpps-port", "the MPPS SCP's port"),
)
# Orthanc's own paths, resolved like the section's against orthanc.json's folder.
ORTHANC_PATHS: tuple[tuple[str, ...], ...] = (("StorageDirectory",), ("IndexDirectory",), ("PythonScript",),
                                              ("Worklists", "Database"))


def section_of(config) -> dict:
    section = config.get("Coercion") if isinstance(config, dict) else None
    return section if isinstance(section, dict) else {}


def read(config: dict, environ) -> dict:
    """Every key's value: its environment variable, else the section's value, else its default."""
    section = section_of(config)
    values: dict = {}
    for key in KEYS:
        value = environ.get(key.variable) if key.variable else None
        if value in (None, ""):
            value = section.get(key.name)
        if value in (None, ""):
            value = key.default(values) if callable(key.default) else key.default
        values[key.name] = value
    return values


def path_keys() -> list[tuple[str, ...]]:
    """Every setting that holds a path (or a location that may be one): serve resolves them."""
    return [*ORTHANC_PATHS, *(("Coercion", k.name) for k in KEYS if k.kind in (PATH, LOCATION, SECRET_FILE))]


def secret_files(values: dict, environ) -> list[tuple[str, str]]:
    """(what, path) of the files that hold a secret, where the plugin will read them."""
    found = []
    for key in KEYS:
        if key.kind != SECRET_FILE or not values.get(key.name):
            continue
        if key.name == "SecretFile" and environ.get("COERCION_SECRET"):
            continue  # the secret comes from the environment: the file is not read
        found.append((key.what, str(values[key.name])))
    return found


def stores(values: dict) -> list[tuple[str, str]]:
    """(what, location) of every store."""
    return [(key.what, str(values[key.name])) for key in KEYS if key.kind == LOCATION]


# -- Coercion.Mpps ---------------------------------------------------------------------------

@dataclass(frozen=True)
class MppsSettings:
    port: int
    aet: str
    host: str = "127.0.0.1"
    check_host: bool = False  # DicomCheckModalityHost
    strict_aet: bool = False  # StrictAetComparison
    check_called_aet: bool = False  # DicomCheckCalledAet
    timeout: int = 10  # DicomScuTimeout, for the forwards
    scp_timeout: int = 30  # DicomScpTimeout: an association idle that long is closed
    request_timeout: float = 5  # RequestTimeout: a connection without an A-ASSOCIATE-RQ that long is dropped
    max_associations: int = 16  # MaxAssociations, from all callers
    max_per_host: int = 4  # MaxAssociationsPerHost

    @classmethod
    def from_configuration(cls, config: dict) -> "MppsSettings | None":
        """The settings of ``Coercion.Mpps``; None when no port is set (no MPPS SCP). Raises
        ValueError naming the setting at fault."""
        section = (config.get("Coercion") or {}).get("Mpps")
        if section is None:
            return None
        if not isinstance(section, dict):
            raise ValueError('Coercion.Mpps must be an object like {"Port": 11114}')
        known = ("Aet", "Host", "MaxAssociations", "MaxAssociationsPerHost", "Port", "RequestTimeout")
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ValueError(f"Coercion.Mpps: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if "Port" not in section:
            return None
        port = section["Port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"Coercion.Mpps.Port must be a port number (1 to 65535), got {port!r}")
        for key in ("DicomPort", "HttpPort"):
            if config.get(key, 4242 if key == "DicomPort" else 8042) == port:
                raise ValueError(f"Coercion.Mpps.Port {port} is Orthanc's {key}: choose a port of its own")
        aet = section.get("Aet", config.get("DicomAet", "ORTHANC"))
        if not isinstance(aet, str) or not aet.strip() or len(aet.strip()) > 16 or not aet.isascii() \
                or "\\" in aet:
            raise ValueError(f"Coercion.Mpps.Aet must be an AE title of 1 to 16 characters, got {aet!r}")
        host = section.get("Host", "127.0.0.1")
        if not isinstance(host, str) or not host:
            raise ValueError(f"Coercion.Mpps.Host must be an address to listen on, got {host!r}")
        timeouts = []
        for key, default in (("DicomScuTimeout", 10), ("DicomScpTimeout", 30)):
            value = config.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a whole number of seconds, got {value!r}")
            timeouts.append(value)
        request_timeout = section.get("RequestTimeout", cls.request_timeout)
        if isinstance(request_timeout, bool) or not isinstance(request_timeout, (int, float)) \
                or not 0 < request_timeout <= 60:
            raise ValueError(f"Coercion.Mpps.RequestTimeout must be a number of seconds (over 0, at most 60), "
                             f"got {request_timeout!r}")
        limits = []
        for key, default in (("MaxAssociations", cls.max_associations),
                             ("MaxAssociationsPerHost", cls.max_per_host)):
            value = section.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
                raise ValueError(f"Coercion.Mpps.{key} must be a whole number from 1 to 256, got {value!r}")
            limits.append(value)
        if limits[1] > limits[0]:
            raise ValueError(f"Coercion.Mpps.MaxAssociationsPerHost ({limits[1]}) is more than "
                             f"Coercion.Mpps.MaxAssociations ({limits[0]})")
        return cls(port, aet.strip(), host, bool(config.get("DicomCheckModalityHost", False)),
                   bool(config.get("StrictAetComparison", False)), bool(config.get("DicomCheckCalledAet", False)),
                   *timeouts, request_timeout, *limits)


# -- Coercion.Views --------------------------------------------------------------------------

_VIEW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_VIEW_NAMES = frozenset({"servers"})  # /coercion/dicom-web/servers/{id}/stow is a route of its own


@dataclass(frozen=True)
class ViewSettings:
    """One de-identified DICOMweb view: the outgoing rule whose pseudonyms it shows, the file
    holding its credential (None: only its users), the Orthanc users (RegisteredUsers) it is
    the only thing of Orthanc they may reach."""

    name: str
    rule: str
    token_file: str | None = None
    users: tuple[str, ...] = ()


def views_of(config: dict) -> dict[str, ViewSettings]:
    """``Coercion.Views``; raises ValueError naming the setting at fault."""
    section = section_of(config).get("Views")
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError('Coercion.Views must be an object like {"research": {"Rule": "...", "TokenFile": "..."}}')
    views: dict[str, ViewSettings] = {}
    claimed: dict[str, str] = {}
    for name, entry in section.items():
        where = f"Coercion.Views.{name}"
        if not _VIEW_NAME.fullmatch(str(name)) or name in RESERVED_VIEW_NAMES:
            raise ValueError(f"{where}: a view's name is letters, digits, '.', '_' or '-' (not "
                             f"{', '.join(sorted(RESERVED_VIEW_NAMES))})")
        if not isinstance(entry, dict):
            raise ValueError(f'{where} must be an object like {{"Rule": "...", "TokenFile": "..."}}')
        unknown = sorted(set(entry) - {"Rule", "TokenFile", "Users"})
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: Rule, TokenFile, Users")
        rule, token_file, users = entry.get("Rule"), entry.get("TokenFile"), entry.get("Users", [])
        if not isinstance(rule, str) or not rule:
            raise ValueError(f"{where}.Rule must name an outgoing rule (C_STORE_RQ, role SCP)")
        if token_file is not None and (not isinstance(token_file, str) or not token_file):
            raise ValueError(f"{where}.TokenFile must be the path of a file holding the view's credential")
        if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users):
            raise ValueError(f"{where}.Users must be a list of Orthanc users (RegisteredUsers)")
        if token_file is None and not users:
            raise ValueError(f"{where}: give TokenFile, Users or both: a view nobody may open serves nothing")
        for user in users:
            if user in claimed:
                raise ValueError(f"{where}.Users: {user!r} is a user of view {claimed[user]!r} already: a user "
                                 "reaches one view only")
            claimed[user] = name
        views[name] = ViewSettings(name, rule, token_file, tuple(users))
    return views
