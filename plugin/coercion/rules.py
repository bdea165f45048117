"""Coercion rules as data: YAML files in a folder, validated, matched like dcm4chee's.

A rules file holds a list of rules::

    - name: research-ct
      dimse: C_STORE_RQ            # C_STORE_RQ, C_FIND_RQ, C_FIND_RSP, N_CREATE_RQ, N_SET_RQ
      role: SCU                    # the peer's role: SCU = a peer sends to us, SCP = we send to it
      sending-aet: [CT01, "MOD_.*"]  # exact values or regular expressions (full match),
      receiving-aet: [ORTHANC]       # compared as Orthanc compares AE titles (see Peers)
      sending-modality: [ct-room-1]  # or a DicomModalities entry, by its symbolic name
      sending-host: ["127\\.0\\.0\\.1"]
      sop-class: [1.2.840.10008.5.1.4.1.1.2]
      conditions: ["Modality=CT|MR", "StudyDescription!=.*PHANTOM.*"]
      priority: 10                 # the highest matching priority wins; ties: file name, then list order
      uri: "deidentify:RetainPatientIDHashOption"
      on-failure: reject           # reject (default) or discard

Every error names the file, the rule and the field at fault.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Mapping

import yaml
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from .engine.pixels.policy import NO_REGIONS, REGIONS_FILE, RegionsError, SiteRegions, load_regions
from .engine.pixels.settings import TEXT_MODES, PixelSettings
from .engine.uri import DeidentifyURI, Option, URIError, parse_uri

DIMSE = ("C_STORE_RQ", "C_FIND_RQ", "C_FIND_RSP", "N_CREATE_RQ", "N_SET_RQ")
# The C-FIND information models. Orthanc does not tell plugins which query/retrieve model a
# C-FIND uses: a rule naming one of them applies to all three.
QUERY_RETRIEVE_FIND = frozenset({"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1",
                                 "1.2.840.10008.5.1.4.1.2.3.1"})
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # what a query/retrieve C-FIND is matched as
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
ROLES = ("SCU", "SCP")
ON_FAILURE = ("reject", "discard")
FIELDS = {
    "name", "dimse", "role", "sending-aet", "receiving-aet", "sending-host", "sop-class",
    "conditions", "priority", "uri", "on-failure", "description", "forward", "scheduled-station-aet",
    "pixel-text", "sending-modality", "receiving-modality", "receiving-peer", "receiving-dicomweb-server",
}
# How data leaves Orthanc, each with the rule field that names its receivers: DICOM (receiving-aet,
# receiving-modality), an Orthanc peer over HTTP (receiving-peer, a key of OrthancPeers), a
# DICOMweb server (receiving-dicomweb-server, a key of DicomWeb.Servers).
DICOM, PEER, DICOMWEB = "dicom", "peer", "dicomweb"
FORWARD_FIELDS = {"to", "to-peers", "to-dicomweb-servers", "when", "conditions", "retries", "retry-interval"}
# How the forwarding queue writes a destination that is not a modality (edge/forwarding.py).
PEER_DESTINATION, DICOMWEB_DESTINATION = "peer:", "dicomweb-server:"
# When a route sends what it matched: each instance as it is stored, or the whole series or
# study once Orthanc declares it stable (no new instance for StableAge seconds).
FORWARD_WHEN = ("received", "stable-series", "stable-study")
RULE_FILE_SUFFIXES = (".yaml", ".yml")
_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_CONDITION = re.compile(r"^(?P<path>[^!=]+?)\s*(?P<op>!?=)(?P<value>.*)$")


class RuleError(ValueError):
    """A rule set that cannot be used; the message names the file, the rule and the field."""


@dataclass(frozen=True)
class Condition:
    """``Path[!]=regex``: the attribute (through sequence items) has a value that fully matches."""

    text: str
    path: tuple[int, ...]
    pattern: re.Pattern
    negate: bool

    def matches(self, ds: Dataset) -> bool:
        found = any(self.pattern.fullmatch(v) for v in _values_at(ds, self.path))
        return found != self.negate


def _values_at(ds: Dataset, path: tuple[int, ...]):
    tag, rest = path[0], path[1:]
    if tag not in ds:
        return
    elem = ds[tag]
    if rest:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _values_at(item, rest)
        return
    value = elem.value
    if value is None or value == "":
        yield ""
    elif elem.VR == "SQ":
        return
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        for v in value:
            yield str(v)
    else:
        yield str(value)


@dataclass(frozen=True)
class Matcher:
    """A list of exact values or regular expressions; an empty list matches anything."""

    entries: tuple[str, ...]
    patterns: tuple[re.Pattern, ...]

    def matches(self, value: str | None) -> bool:
        if not self.entries:
            return True
        if value is None:
            return False
        return value in self.entries or any(p.fullmatch(value) for p in self.patterns)


ANY = Matcher((), ())

# What Orthanc ignores when it compares AE titles: the padding of the 16-byte field (DICOM
# says leading and trailing spaces are not significant) and, unless StrictAetComparison,
# the case of ASCII letters (Orthanc lower-cases byte by byte, ASCII only).
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def aet_key(aet: str, strict: bool = False) -> str:
    """An AE title as Orthanc compares it: two titles are the same caller iff their keys are equal."""
    text = str(aet).strip(" ")
    return text if strict else text.translate(_ASCII_UPPER)


class Peers:
    """The callers Orthanc admits, as Orthanc decides it: AE titles compared as Orthanc compares
    them (``StrictAetComparison``, padding) and the ``DicomModalities`` entries by symbolic name.

    ``modalities`` is the entries' AE titles by name, or a function returning them (the edge
    passes Orthanc's live list, which changes under ``PUT /modalities/{id}``); a function is
    called at most every ``ttl`` seconds.
    """

    def __init__(self, strict: bool = False,
                 modalities: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None, ttl: float = 2.0):
        self.strict = strict
        self._source = modalities if callable(modalities) else None
        self._modalities: dict[str, str] = {} if callable(modalities) else dict(modalities or {})
        self._ttl, self._read_at = ttl, float("-inf")

    def key(self, aet: str | None) -> str | None:
        return None if aet is None else aet_key(aet, self.strict)

    def same(self, a: str | None, b: str | None) -> bool:
        return a is not None and b is not None and self.key(a) == self.key(b)

    def modalities(self) -> dict[str, str]:
        """AE title by symbolic name, as Orthanc knows them now."""
        if self._source is not None:
            now = time.monotonic()
            if now - self._read_at > self._ttl:
                self._modalities = {str(k): str(v) for k, v in dict(self._source()).items()}
                self._read_at = now
        return self._modalities

    def aet_of(self, name: str) -> str | None:
        return self.modalities().get(name)


DEFAULT_PEERS = Peers()


@dataclass(frozen=True)
class AeMatcher:
    """AE titles a rule names, as text (exact or full-match regular expressions) and as
    ``DicomModalities`` entries; empty: any caller. Compared as Orthanc compares (``Peers``)."""

    titles: Matcher = ANY
    modalities: tuple[str, ...] = ()
    insensitive: tuple[re.Pattern, ...] = ()  # the titles' patterns, ignoring ASCII case
    # The titles' keys (aet_key), made once: strict, and folded as by default.
    strict_keys: frozenset = frozenset()
    folded_keys: frozenset = frozenset()

    @property
    def entries(self) -> tuple[str, ...]:
        return self.titles.entries + tuple(f"modality:{m}" for m in self.modalities)

    def matches(self, value: str | None, peers: Peers = DEFAULT_PEERS) -> bool:
        if not self.titles.entries and not self.modalities:
            return True
        if value is None:
            return False
        if peers.key(value) in (self.strict_keys if peers.strict else self.folded_keys):
            return True
        patterns = self.titles.patterns if peers.strict else self.insensitive
        if any(p.fullmatch(value.strip(" ")) for p in patterns):
            return True
        return any(peers.same(peers.aet_of(name), value) for name in self.modalities)


ANY_AET = AeMatcher()


@dataclass(frozen=True)
class Forward:
    """A route: what a rule matched on the way in is sent on to peers (through the rules
    for outgoing C-STORE), with retries."""

    to: tuple[str, ...]  # modalities, by symbolic name or AE title
    when: str = "stable-study"
    conditions: tuple[Condition, ...] = ()
    retries: int = 5
    retry_interval: int = 30  # seconds before the first retry; doubled after each, up to an hour
    to_peers: tuple[str, ...] = ()  # Orthanc peers, by name (OrthancPeers)
    to_dicomweb_servers: tuple[str, ...] = ()  # DICOMweb servers, by name (DicomWeb.Servers)

    def destinations(self) -> list[str]:
        """Every destination as the forwarding queue writes it: a modality as named, a peer or a
        DICOMweb server after its prefix (PEER_DESTINATION, DICOMWEB_DESTINATION)."""
        return [*self.to, *(PEER_DESTINATION + p for p in self.to_peers),
                *(DICOMWEB_DESTINATION + w for w in self.to_dicomweb_servers)]

    def as_dict(self) -> dict:
        return {"to": list(self.to), **({"to-peers": list(self.to_peers)} if self.to_peers else {}),
                **({"to-dicomweb-servers": list(self.to_dicomweb_servers)} if self.to_dicomweb_servers else {}),
                "when": self.when, "conditions": [c.text for c in self.conditions],
                "retries": self.retries, "retry-interval": self.retry_interval}


@dataclass(frozen=True)
class Rule:
    name: str
    dimse: str
    role: str
    uri: DeidentifyURI | None  # None: a route only (``forward``), nothing coerced on the way in
    source: str  # the file that defines the rule
    index: int  # its position in the file
    sending_aet: AeMatcher = ANY_AET
    receiving_aet: AeMatcher = ANY_AET
    receiving_peer: Matcher = ANY  # Orthanc peers by name (OrthancPeers)
    receiving_dicomweb_server: Matcher = ANY  # DICOMweb servers by name (DicomWeb.Servers)
    sending_host: Matcher = ANY
    sop_classes: frozenset = frozenset()
    conditions: tuple[Condition, ...] = ()
    priority: int = 0
    on_failure: str = "reject"
    description: str = ""
    forward: Forward | None = None
    # dcm4chee's "calling AE title as Scheduled Station AE Title" for worklist queries
    calling_aet_as_station: bool = False
    # How CleanPixelDataOption cleans (its text mode, the folder's regions); None without it
    pixels: PixelSettings | None = None

    def matches_peers(self, transaction: Transaction, peers: Peers = DEFAULT_PEERS) -> bool:
        return (self.dimse == transaction.dimse and self.role == transaction.role
                and self.sending_aet.matches(transaction.calling_aet, peers)
                and self.receives(transaction, peers)
                and self.sending_host.matches(transaction.host))

    def receives(self, transaction: Transaction, peers: Peers = DEFAULT_PEERS) -> bool:
        """Whether the rule names the transaction's receiver: a rule that names no receiver
        applies to every way out; one that names receivers, to those it names, each way out by
        its own field (a rule naming only peers never matches a DICOM send)."""
        if transaction.exit == PEER:
            named = self.receiving_peer
        elif transaction.exit == DICOMWEB:
            named = self.receiving_dicomweb_server
        else:
            return self.receiving_aet.matches(transaction.called_aet, peers) and (
                bool(self.receiving_aet.entries) or not self.names_other_exits(DICOM))
        return named.matches(transaction.target) and (bool(named.entries) or not self.names_other_exits(
            transaction.exit))

    def names_other_exits(self, way_out: str) -> bool:
        """Whether the rule names receivers of another way out than ``way_out``."""
        return any(entries for way, entries in ((DICOM, self.receiving_aet.entries),
                                                 (PEER, self.receiving_peer.entries),
                                                 (DICOMWEB, self.receiving_dicomweb_server.entries)) if way != way_out)

    def as_dict(self) -> dict:
        return {
            "name": self.name, "dimse": self.dimse, "role": self.role, "uri": str(self.uri) if self.uri else None,
            "sending-aet": list(self.sending_aet.titles.entries), "receiving-aet": list(self.receiving_aet.titles.entries),
            **({"sending-modality": list(self.sending_aet.modalities)} if self.sending_aet.modalities else {}),
            **({"receiving-modality": list(self.receiving_aet.modalities)} if self.receiving_aet.modalities else {}),
            **({"receiving-peer": list(self.receiving_peer.entries)} if self.receiving_peer.entries else {}),
            **({"receiving-dicomweb-server": list(self.receiving_dicomweb_server.entries)}
               if self.receiving_dicomweb_server.entries else {}),
            "sending-host": list(self.sending_host.entries), "sop-class": sorted(self.sop_classes),
            "conditions": [c.text for c in self.conditions], "priority": self.priority,
            "on-failure": self.on_failure, "file": self.source, "description": self.description,
            **({"forward": self.forward.as_dict()} if self.forward else {}),
            **({"pixel-text": self.pixels.text} if self.pixels else {}),
        }


@dataclass(frozen=True)
class Transaction:
    """One piece of data crossing the archive, as the matcher sees it."""

    dimse: str
    role: str
    calling_aet: str | None = None  # the sending AE title
    called_aet: str | None = None  # the receiving AE title
    host: str | None = None  # the sending host
    sop_class_uid: str | None = None  # taken from the dataset when not given
    dataset: Dataset | Callable[[], Dataset | None] | None = None  # parsed only if a rule needs it
    exit: str = DICOM  # how it leaves (role SCP): DICOM, PEER or DICOMWEB
    target: str | None = None  # the peer's or DICOMweb server's name (PEER, DICOMWEB)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()  # the rules that coerce (they have a uri)
    files: tuple[str, ...] = ()
    routes: tuple[Rule, ...] = ()  # the rules that forward (they have a forward)
    regions: SiteRegions = NO_REGIONS  # the folder's pixel-regions.yaml
    peers: Peers = DEFAULT_PEERS  # how the callers' AE titles are compared, the modalities by name

    def peer_independent(self, dimse: str, role: str) -> bool:
        """Whether no rule for (dimse, role) looks at the peer's AE title or host.

        The peer is the sender for role SCU and the receiver for role SCP; our own AE title
        is always known, so rules naming only it stay peer-independent.
        """
        if role == "SCU":
            return not any(r.sending_aet.entries or r.sending_host.entries
                           for r in self.rules if r.dimse == dimse and r.role == role)
        return not any(r.receiving_aet.entries or r.receiving_peer.entries or r.receiving_dicomweb_server.entries
                       or r.sending_host.entries for r in self.rules if r.dimse == dimse and r.role == role)

    def for_peers(self, transaction: Transaction) -> list[Rule]:
        """The rules that match the transaction's kind and peers, whatever the data says."""
        return [r for r in self.rules if r.matches_peers(transaction, self.peers)]

    def may_match(self, transaction: Transaction) -> bool:
        return any(r.matches_peers(transaction, self.peers) for r in self.rules)

    @cached_property
    def reads_private(self) -> bool:
        """Whether a coercion rule needs the private attributes of what it reads: a condition
        on one, or a URI that keeps the safe ones. If none does, they need not be read."""
        return any(
            Option.RetainSafePrivateOption in r.uri
            or any((tag >> 16) & 1 for c in r.conditions for tag in c.path)
            for r in self.rules
        )

    @cached_property
    def store_routes(self) -> tuple[Rule, ...]:
        """The routes that forward instances received (the others forward MPPS messages)."""
        return tuple(r for r in self.routes if r.dimse == "C_STORE_RQ")

    def matching_routes(self, transaction: Transaction) -> list[Rule]:
        """Every route whose peers, SOP classes and conditions (the rule's and the forward's)
        match; unlike coercion rules, routes do not compete: each one that matches forwards."""
        dataset = _lazy_dataset(transaction)
        return [r for r in self.routes if r.matches_peers(transaction, self.peers)
                and _data_matches(r, transaction, dataset, r.conditions + r.forward.conditions)]

    def by_name(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def match(self, transaction: Transaction) -> Rule | None:
        return match(self.rules, transaction, self.peers)


def match(rules, transaction: Transaction, peers: Peers = DEFAULT_PEERS) -> Rule | None:
    """The winning rule: the highest priority among the matching ones, the first on a tie."""
    best: Rule | None = None
    dataset = _lazy_dataset(transaction)
    for rule in rules:
        if best is not None and rule.priority <= best.priority:
            continue
        if rule.matches_peers(transaction, peers) and _data_matches(rule, transaction, dataset, rule.conditions):
            best = rule
    return best


def _lazy_dataset(transaction: Transaction) -> Callable[[], Dataset | None]:
    """The transaction's dataset, parsed on first use only (most rules never look at it)."""
    resolved: list = []

    def dataset() -> Dataset | None:
        if not resolved:
            ds = transaction.dataset
            resolved.append(ds() if callable(ds) else ds)
        return resolved[0]

    return dataset


def _data_matches(rule: Rule, transaction: Transaction, dataset, conditions) -> bool:
    if rule.sop_classes:
        sop_class = transaction.sop_class_uid
        if sop_class is None and dataset() is not None:
            sop_class = str(dataset().get("SOPClassUID", "") or "")
        if sop_class not in rule.sop_classes:
            return False
    if conditions:
        ds = dataset()
        if ds is None or not all(c.matches(ds) for c in conditions):
            return False
    return True


# -- loading ------------------------------------------------------------------------------


def _where(source: str, name: str | None, index: int) -> str:
    return f"{source}: rule {name!r}" if name else f"{source}: rule #{index + 1}"


def _string_list(value, where: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise RuleError(f"{where}: field '{key}' must be a string or a list of strings")
    return tuple(str(v).strip() for v in value)


def _matcher(value, where: str, key: str) -> Matcher:
    entries = _string_list(value, where, key)
    patterns = []
    for entry in entries:
        try:
            patterns.append(re.compile(entry))
        except re.error as exc:
            raise RuleError(f"{where}: field '{key}': {entry!r} is not a valid regular expression: {exc}") from None
    return Matcher(entries, tuple(patterns))


def _aet_matcher(raw: dict, where: str, side: str) -> AeMatcher:
    titles = _matcher(raw.get(f"{side}-aet"), where, f"{side}-aet")
    modalities = _string_list(raw.get(f"{side}-modality"), where, f"{side}-modality")
    if not titles.entries and not modalities:
        return ANY_AET
    if any(not m for m in modalities):
        raise RuleError(f"{where}: field '{side}-modality': a modality is named by its DicomModalities key, "
                        "not an empty string")
    # ASCII only, as Orthanc folds case: a Unicode fold would admit titles Orthanc tells apart.
    insensitive = tuple(re.compile(p.pattern, re.IGNORECASE | re.ASCII) for p in titles.patterns)
    return AeMatcher(titles, modalities, insensitive, frozenset(aet_key(e, True) for e in titles.entries),
                     frozenset(aet_key(e, False) for e in titles.entries))


def _tag_of(part: str, where: str, text: str) -> int:
    m = _TAG.match(part.strip())
    if m:
        return int(m.group(1) + m.group(2), 16)
    tag = tag_for_keyword(part.strip())
    if tag is None:
        raise RuleError(f"{where}: field 'conditions': {text!r}: unknown attribute {part.strip()!r}")
    return tag


def parse_condition(text: str, where: str = "condition") -> Condition:
    if not isinstance(text, str):
        raise RuleError(f"{where}: field 'conditions': each condition must be a string like 'Modality=CT|MR'")
    m = _CONDITION.match(text.strip())
    if not m:
        raise RuleError(f"{where}: field 'conditions': {text!r} is not of the form Keyword=regex or Keyword!=regex")
    path = tuple(_tag_of(p, where, text) for p in m.group("path").split("."))
    try:
        pattern = re.compile(m.group("value"))
    except re.error as exc:
        raise RuleError(f"{where}: field 'conditions': {text!r}: bad regular expression: {exc}") from None
    return Condition(text.strip(), path, pattern, m.group("op") == "!=")


def parse_rule(raw, source: str, index: int) -> Rule:
    where = _where(source, raw.get("name") if isinstance(raw, dict) else None, index)
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: a rule must be a mapping of fields")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise RuleError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(FIELDS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RuleError(f"{where}: field 'name' is required and must be a non-empty string")
    for key, allowed in (("dimse", DIMSE), ("role", ROLES)):
        if raw.get(key) not in allowed:
            raise RuleError(f"{where}: field '{key}' must be one of {', '.join(allowed)}, got {raw.get(key)!r}")
    forward = _forward(raw["forward"], where, raw) if "forward" in raw else None
    if "uri" not in raw and forward is None:
        raise RuleError(f"{where}: field 'uri' is required (for example 'deidentify:'), unless the rule has 'forward'")
    try:
        uri = parse_uri(raw["uri"]) if "uri" in raw else None
    except URIError as exc:
        raise RuleError(f"{where}: field 'uri': {exc}") from None
    station = raw.get("scheduled-station-aet")
    if station is not None and (station != "calling-aet" or raw.get("dimse") != "C_FIND_RQ"
                                or raw.get("role") != "SCU"):
        raise RuleError(f"{where}: field 'scheduled-station-aet' takes only the value calling-aet, on a rule for "
                        "C_FIND_RQ with role SCU (a modality asking for its worklist)")
    sop_classes = frozenset(_string_list(raw.get("sop-class"), where, "sop-class"))
    if raw.get("dimse") in ("C_FIND_RQ", "C_FIND_RSP") and sop_classes & QUERY_RETRIEVE_FIND:
        sop_classes |= QUERY_RETRIEVE_FIND
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RuleError(f"{where}: field 'priority' must be an integer, got {priority!r}")
    on_failure = raw.get("on-failure", "reject")
    if on_failure not in ON_FAILURE:
        raise RuleError(f"{where}: field 'on-failure' must be reject or discard, got {on_failure!r}")
    conditions = raw.get("conditions") or []
    if not isinstance(conditions, list):
        raise RuleError(f"{where}: field 'conditions' must be a list of strings")
    pixel_text = raw.get("pixel-text")
    cleans_pixels = uri is not None and Option.CleanPixelDataOption in uri
    if pixel_text is not None and (not cleans_pixels or pixel_text not in TEXT_MODES):
        raise RuleError(f"{where}: field 'pixel-text' must be {' or '.join(TEXT_MODES)}, on a rule whose uri has "
                        f"CleanPixelDataOption, got {pixel_text!r}")
    return Rule(
        name=name.strip(),
        dimse=raw["dimse"],
        role=raw["role"],
        uri=uri,
        source=source,
        index=index,
        sending_aet=_aet_matcher(raw, where, "sending"),
        receiving_aet=_aet_matcher(raw, where, "receiving"),
        receiving_peer=_receiver(raw, where, "receiving-peer"),
        receiving_dicomweb_server=_receiver(raw, where, "receiving-dicomweb-server"),
        sending_host=_matcher(raw.get("sending-host"), where, "sending-host"),
        sop_classes=sop_classes,
        conditions=tuple(parse_condition(c, where) for c in conditions),
        priority=priority,
        on_failure=on_failure,
        description=str(raw.get("description", "")),
        forward=forward,
        calling_aet_as_station=station is not None,
        pixels=PixelSettings(pixel_text or "all") if cleans_pixels else None,
    )


def _receiver(raw: dict, where: str, key: str) -> Matcher:
    """Peers or DICOMweb servers a rule names (exact names or full-match regular expressions):
    only where data leaves Orthanc, a C-STORE with role SCP."""
    if key in raw and (raw.get("dimse") != "C_STORE_RQ" or raw.get("role") != "SCP"):
        raise RuleError(f"{where}: field '{key}' names where Orthanc sends: only rules for C_STORE_RQ with role SCP "
                        "may have it")
    matcher = _matcher(raw.get(key), where, key)
    if any(not entry for entry in matcher.entries):
        raise RuleError(f"{where}: field '{key}': name a peer or server by its key, not an empty string")
    return matcher


def _forward(raw, where: str, rule: dict) -> Forward:
    if rule.get("dimse") not in ("C_STORE_RQ", "N_CREATE_RQ") or rule.get("role") != "SCU":
        raise RuleError(f"{where}: field 'forward': only rules for C_STORE_RQ or N_CREATE_RQ with role SCU (what we "
                        "receive) can forward")
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: field 'forward' must be a mapping like {{to: [RESEARCH], when: stable-study}}")
    unknown = sorted(set(raw) - FORWARD_FIELDS)
    if unknown:
        raise RuleError(f"{where}: field 'forward': unknown field(s) {', '.join(map(repr, unknown))}; "
                        f"known: {', '.join(sorted(FORWARD_FIELDS))}")
    to = _string_list(raw.get("to"), where, "forward.to")
    to_peers = _string_list(raw.get("to-peers"), where, "forward.to-peers")
    to_servers = _string_list(raw.get("to-dicomweb-servers"), where, "forward.to-dicomweb-servers")
    if not (to or to_peers or to_servers):
        raise RuleError(f"{where}: field 'forward.to' must name at least one modality (or 'forward.to-peers' a "
                        "peer, 'forward.to-dicomweb-servers' a DICOMweb server)")
    if any(not name for name in (*to_peers, *to_servers)):
        raise RuleError(f"{where}: field 'forward': name a peer or server by its key, not an empty string")
    if rule.get("dimse") == "N_CREATE_RQ" and (to_peers or to_servers):
        raise RuleError(f"{where}: field 'forward': an MPPS route forwards to modalities only ('to'): peers and "
                        "DICOMweb servers take no MPPS")
    when = raw.get("when", "stable-study")
    if when not in FORWARD_WHEN:
        raise RuleError(f"{where}: field 'forward.when' must be one of {', '.join(FORWARD_WHEN)}, got {when!r}")
    if rule.get("dimse") == "N_CREATE_RQ" and when != "received":
        # A performed procedure step is forwarded message by message: its N-CREATE, then its N-SETs.
        raise RuleError(f"{where}: field 'forward.when' must be received on a rule for N_CREATE_RQ (each MPPS "
                        f"message is forwarded as it is received), got {when!r}")
    numbers = {}
    for key, default, low in (("retries", 5, 0), ("retry-interval", 30, 1)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise RuleError(f"{where}: field 'forward.{key}' must be a whole number of at least {low}, got {value!r}")
        numbers[key] = value
    conditions = raw.get("conditions") or []
    if not isinstance(conditions, list):
        raise RuleError(f"{where}: field 'forward.conditions' must be a list of strings")
    return Forward(to, when, tuple(parse_condition(c, where) for c in conditions), numbers["retries"],
                   numbers["retry-interval"], to_peers, to_servers)


def parse_rules_text(text: str, source: str) -> list[Rule]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RuleError(f"{source}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return []
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if not isinstance(data, list):
        raise RuleError(f"{source}: a rules file must hold a list of rules")
    return [parse_rule(raw, source, i) for i, raw in enumerate(data)]


def load_rules(directory: str | Path, peers: Peers = DEFAULT_PEERS) -> RuleSet:
    """Load and validate every ``*.yaml``/``*.yml`` file of ``directory`` (not recursive);
    ``peers`` says how the AE titles are compared and which modalities there are."""
    folder = Path(directory)
    if not folder.is_dir():
        raise RuleError(f"rules folder {folder} does not exist or is not a folder")
    rules: list[Rule] = []
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix in RULE_FILE_SUFFIXES and p.name != REGIONS_FILE)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError(f"{path}: cannot be read: {exc}") from None
        rules += parse_rules_text(text, str(path))
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.name in seen:
            raise RuleError(f"{rule.source}: rule {rule.name!r}: field 'name': already used in {seen[rule.name]}")
        seen[rule.name] = rule.source
    regions_file = folder / REGIONS_FILE
    regions = NO_REGIONS
    if regions_file.is_file():
        try:
            regions = load_regions(regions_file)
        except RegionsError as exc:
            raise RuleError(str(exc)) from None
        rules = [replace(r, pixels=replace(r.pixels, regions=regions)) if r.pixels else r for r in rules]
        files.append(regions_file)
    return RuleSet(tuple(r for r in rules if r.uri is not None), tuple(str(p) for p in files),
                   tuple(r for r in rules if r.forward is not None), regions, peers)
