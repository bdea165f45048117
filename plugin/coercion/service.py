"""The coercion service: rules, keys, linkage and statistics behind plain calls.

Everything an Orthanc callback needs, without Orthanc: the Orthanc edge (``coercion.edge``)
translates each event into a :class:`Transaction` plus bytes and turns the :class:`Decision`
back into what Orthanc expects. Thread-safe: Orthanc calls it from many threads.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from pydicom.dataset import Dataset

from .engine.deidentify import Deidentifier, Outcome
from .engine.dicomio import DicomError, joined, read_instance
from .engine.explain import explain
from .engine.pixels.settings import PixelSettings
from .engine.tags import PATIENT_ID
from .engine.pseudonyms import Keys
from .engine.uri import parse_uri
from . import configuration
from .rules import STUDY_ROOT_FIND, Peers, Rule, RuleError, RuleSet, Transaction, load_rules
from .stores.activity import Activity, Counts, open_activity
from .stores.linkage import LinkageStore, open_store

UNCHANGED = "unchanged"
COERCED = "coerced"
REJECTED = "rejected"
DISCARDED = "discarded"
# The (dimse, role) pairs the Orthanc adapter applies; other rules are refused at load time.
ENFORCED = frozenset({("C_STORE_RQ", "SCU"), ("C_STORE_RQ", "SCP"), ("C_FIND_RQ", "SCU"), ("C_FIND_RSP", "SCU"),
                      ("C_FIND_RQ", "SCP"), ("C_FIND_RSP", "SCP"), ("N_CREATE_RQ", "SCU"), ("N_SET_RQ", "SCU"),
                      ("N_CREATE_RQ", "SCP"), ("N_SET_RQ", "SCP")})
FIND = ("C_FIND_RQ", "C_FIND_RSP")


@dataclass(frozen=True)
class Decision:
    action: str  # unchanged, coerced, rejected, discarded
    rule: Rule | None = None
    data: bytes | None = None  # the coerced instance
    outcome: Outcome | None = None
    reason: str = ""  # why it was rejected or discarded; never holds attribute values
    milliseconds: float = 0.0
    bytes_in: int = 0
    calling_aet: str | None = None  # whom it is counted for (the transaction's; None: no AE title)
    header: Dataset | None = None  # the de-identified header, when only it was asked for (coerce_with)


@dataclass(frozen=True)
class Settings:
    rules_directory: str
    linkage_database: str
    keys: Keys
    linkage_token: str | None = None  # re-identification
    admin_token: str | None = None  # previews, reloads, send control
    tables: str | None = None
    send_batch_size: int = 32  # instances per association of an outgoing coerced send
    forwards_database: str = "forwards.sqlite"
    mpps_database: str = "mpps.sqlite"
    activity_database: str = "activity.sqlite"  # statistics per rule and calling AE title
    database_password_file: str | None = None  # the password of postgresql:// stores
    strict_aet: bool = False  # Orthanc's StrictAetComparison: how every AE title is compared
    allowed_origins: tuple[str, ...] = ()  # other origins whose pages may change state (crosssite)

    @classmethod
    def from_configuration(cls, config: dict, environ: dict | None = None) -> "Settings":
        """From the ``Coercion`` section of orthanc.json; COERCION_* variables take precedence
        (configuration.py: one table of keys, variables and defaults)."""
        env = os.environ if environ is None else environ
        values = configuration.read(config, env)
        if not values["RulesDirectory"]:
            raise ValueError("Coercion.RulesDirectory is not set in the configuration (or COERCION_RULES)")
        window = values["DateShiftWindow"]
        if (not isinstance(window, list) or len(window) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in window)):
            raise ValueError("Coercion.DateShiftWindow must be a list of two whole numbers of days")
        secret_env = {k: v for k, v in env.items() if k == "COERCION_SECRET"}
        if values["SecretFile"]:
            secret_env["COERCION_SECRET_FILE"] = values["SecretFile"]
        keys = Keys.from_env(secret_env, date_shift_window=tuple(window))
        credentials = {kind: _credential(env, values, kind) for kind in CREDENTIALS}
        return cls(
            rules_directory=values["RulesDirectory"],
            linkage_database=values["LinkageDatabase"],
            forwards_database=values["ForwardsDatabase"],
            mpps_database=values["MppsDatabase"],
            activity_database=values["ActivityDatabase"],
            database_password_file=values["DatabasePasswordFile"],
            keys=keys,
            linkage_token=credentials["linkage"],
            admin_token=credentials["admin"],
            tables=values["TablesDirectory"],
            send_batch_size=_positive_int(values["SendBatchSize"], "Coercion.SendBatchSize"),
            strict_aet=config.get("StrictAetComparison") is True,
            allowed_origins=_origins(values["AllowedOrigins"]),
        )


def _key(rule: Rule) -> tuple:
    """What makes two rules' de-identifiers the same: the URI, and how pixels are cleaned."""
    return str(rule.uri), rule.pixels


class CoercionService:
    def __init__(self, settings: Settings, store: LinkageStore | None = None, activity: Activity | None = None,
                 peers: Peers | None = None, find_caller_hosts: bool = False):
        self.settings = settings
        # Whether the edge tells a C-FIND caller's host (Orthanc's SDK 1.12.10 connection).
        self.find_caller_hosts = find_caller_hosts
        # Who is asking, as Orthanc decides it: AE titles compared as Orthanc compares them, and
        # the modalities rules name by symbolic name (the edge gives Orthanc's live list).
        self.peers = peers or Peers(settings.strict_aet)
        self.keys = settings.keys
        self._lock = threading.Lock()
        self._deidentifiers: dict[tuple, Deidentifier] = {}
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        # Checks of a new rule set that only the adapter can make (each raises RuleError).
        self.validators: list[Callable[[RuleSet], None]] = []
        self.ruleset: RuleSet = self._load(settings.rules_directory)  # raises RuleError at start-up
        self.store = store or open_store(settings.linkage_database, settings.keys, settings.database_password_file)
        try:
            # Counted in memory, written to the activity store every few seconds (stores/activity.py).
            self.statistics = activity or open_activity(settings.activity_database, settings.database_password_file)
        except BaseException:
            if store is None:
                self.store.close()
            raise

    # -- rules ------------------------------------------------------------------------------

    def _load(self, directory: str) -> RuleSet:
        ruleset = load_rules(directory, self.peers)
        for rule in ruleset.rules:
            # A rule the plugin would silently ignore is a promise of protection not kept.
            if (rule.dimse, rule.role) not in ENFORCED:
                raise RuleError(
                    f"{rule.source}: rule {rule.name!r}: field 'dimse'/'role': {rule.dimse} with role {rule.role} "
                    f"is not applied by this version of the plugin (it applies "
                    f"{', '.join(f'{d} with role {r}' for d, r in sorted(ENFORCED))}); remove the rule "
                    "rather than rely on it")
            if rule.dimse in FIND and rule.role == "SCU" and rule.sending_host.entries and not self.find_caller_hosts:
                # An older SDK tells a C-FIND callback the AE titles only: the rule could never match.
                raise RuleError(f"{rule.source}: rule {rule.name!r}: field 'sending-host' cannot be applied to "
                                f"{rule.dimse}: this Orthanc does not tell plugins a C-FIND caller's host "
                                "(its Python plugin 7.0 does); match on sending-aet instead")
        for validate in self.validators:
            validate(ruleset)
        deidentifiers = {_key(r): self._deidentifier(r) for r in ruleset.rules}
        with self._lock:
            self._deidentifiers = deidentifiers
            self.loaded_at = time.time()
            self.last_error = None
        return ruleset

    def _deidentifier(self, rule: Rule) -> Deidentifier:
        existing = self._deidentifiers.get(_key(rule))
        return existing or Deidentifier(rule.uri, self.keys, self.settings.tables, rule.pixels)

    def reload(self) -> RuleSet:
        """Load the rules again; a bad set is refused and the active one stays (atomic)."""
        try:
            ruleset = self._load(self.settings.rules_directory)
        except RuleError as exc:
            with self._lock:
                self.last_error = str(exc)
            raise
        self.ruleset = ruleset  # one reference swap: every caller sees the old or the new set
        return ruleset

    def rules_report(self) -> dict:
        ruleset = self.ruleset
        every = sorted({(r.source, r.index): r for r in ruleset.rules + ruleset.routes}.items())
        return {
            "directory": self.settings.rules_directory,
            "files": list(ruleset.files),
            "rules": [r.as_dict() for _, r in every],
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at or 0)),
            "last_error": self.last_error,
        }

    # -- coercion ---------------------------------------------------------------------------

    def rule_for(self, data: bytes, transaction: Transaction, ruleset: RuleSet | None = None) -> Rule | None:
        """The rule that would coerce ``data``; unreadable data gets the rules that may match
        its peers (a coercion would then refuse it)."""
        ruleset = ruleset or self.ruleset
        try:
            header = read_instance(data, drop_private=not ruleset.reads_private).header
        except DicomError:
            return next(iter(ruleset.for_peers(transaction)), None)
        return ruleset.match(transaction_with_dataset(transaction, header))

    def coerce(self, data: bytes, transaction: Transaction, ruleset: RuleSet | None = None,
               provisional: bool = False, counted: bool = True) -> Decision:
        """Match ``transaction`` against the rules (the active ones unless given) and coerce
        ``data`` if a rule wins. The decision is counted and its patient linked at once,
        unless ``provisional`` (a guess the caller may drop): then :meth:`confirm` does it.
        It is counted for the transaction's calling AE title (``Decision.calling_aet``);
        ``counted=False``: a coerced one is linked at once but counted only when the caller,
        who learns the AE title later, gives it to :meth:`count` (a refusal is counted now)."""
        decision = self._decide(data, transaction, ruleset or self.ruleset)
        if decision.action != UNCHANGED:
            decision = replace(decision, calling_aet=transaction.calling_aet)
        if provisional:
            return decision
        try:
            self._link(decision)
        except Exception as exc:  # the linkage store failed: fail closed, as for any failure
            rule = decision.rule
            failed = Decision(DISCARDED if rule and rule.on_failure == "discard" else REJECTED, rule,
                              reason=f"linkage store: {type(exc).__name__}: {safe_message(exc)}", bytes_in=len(data),
                              calling_aet=transaction.calling_aet)
            self.count(failed)
            return failed
        if counted or decision.action != COERCED:
            self.count(decision)
        return decision

    def coerce_with(self, rule: Rule, data: bytes, calling_aet: str | None = None, linked: bool = True,
                    header_only: bool = False) -> Decision:
        """De-identify ``data`` with ``rule`` whatever its matching fields say (a de-identified
        view shows everything in one rule's pseudonyms), linked (unless not ``linked``: the
        caller records ``outcome.uids`` itself, a batch at a time) and counted as :meth:`coerce`
        does; REJECTED, with the reason, when it cannot be (never the data as received).
        ``header_only``: ``Decision.data`` is None and ``Decision.header`` the de-identified header
        (the pixel data is not written)."""
        started = time.perf_counter()
        header = None
        try:
            deid = self.deidentifier(rule)
            instance = read_instance(data, drop_private=deid.removes_private)
            outcome = deid.deidentify_instance(instance)
            if header_only:  # every attribute but the pixel data (some follow it in the file)
                coerced, header = b"", Dataset()
                for part in instance.datasets():
                    header.update(part)
            else:
                coerced = joined(deid.encode(instance))
        except DicomError as exc:
            decision = self._failed(rule, f"unreadable DICOM: {exc}", len(data), started, "reject")
        except Exception as exc:  # fail closed on anything
            decision = self._failed(rule, f"{type(exc).__name__}: {safe_message(exc)}", len(data), started, "reject")
        else:
            decision = Decision(COERCED, rule, coerced, outcome, milliseconds=(time.perf_counter() - started) * 1000,
                                bytes_in=len(data), calling_aet=calling_aet, header=header)
            try:
                if linked:
                    self._link(decision)
            except Exception as exc:  # the linkage store failed: fail closed
                decision = Decision(REJECTED, rule, reason=f"linkage store: {type(exc).__name__}: {safe_message(exc)}",
                                    bytes_in=len(data), calling_aet=calling_aet)
        self.count(decision)
        return decision

    def confirm(self, decision: Decision) -> None:
        """Link a decision's patient and count it (raises if the linkage store fails; then
        it is not counted)."""
        self._link(decision)
        self.count(decision)

    def _link(self, decision: Decision) -> None:
        if decision.action != COERCED:
            return
        outcome = decision.outcome
        if outcome.patient_pseudonym and outcome.original_patient_id:
            self.store.record(outcome.patient_pseudonym, outcome.issuer_of_patient_id,
                              outcome.original_patient_id, decision.rule.name)
        if decision.rule.role == "SCP" and outcome.uids:
            # Handed out to a peer, which may query or retrieve by them later.
            self.store.record_uids(outcome.uids)

    def count(self, decision: Decision) -> None:
        """Count a decision for its rule and ``decision.calling_aet``, in memory (the activity
        store has it within a flush interval; statistics never refuse or delay an instance)."""
        if decision.action == UNCHANGED:
            return
        rule_name = decision.rule.name if decision.rule else "(no rule: unreadable data)"
        seconds = decision.milliseconds / 1000
        if decision.action == COERCED:
            self.statistics.count(rule_name, decision.calling_aet, coerced=1, bytes_in=decision.bytes_in,
                                  bytes_out=len(decision.data), seconds=seconds)
        else:
            self.statistics.count(rule_name, decision.calling_aet, failure=decision.reason or decision.action,
                                  **{decision.action: 1}, bytes_in=decision.bytes_in, seconds=seconds)

    def _decide(self, data: bytes, transaction: Transaction, ruleset: RuleSet) -> Decision:
        parsed: dict = {}
        drop_private = not ruleset.reads_private

        def dataset():
            if "instance" not in parsed:
                try:
                    parsed["instance"] = read_instance(data, drop_private=drop_private)
                except DicomError as exc:
                    parsed["instance"] = None
                    parsed["error"] = exc
            instance = parsed["instance"]
            return instance.header if instance is not None else None

        rule = ruleset.match(transaction_with_dataset(transaction, dataset))
        if rule is None:
            if parsed.get("error") is not None and ruleset.may_match(transaction):
                # A candidate rule could not even look at the data: fail closed.
                return self._failed(None, f"unreadable DICOM: {parsed['error']}", len(data), 0.0, "reject")
            return Decision(UNCHANGED)
        started = time.perf_counter()
        try:
            instance = parsed.get("instance") if "instance" in parsed else read_instance(data, drop_private=drop_private)
            if instance is None:
                raise parsed["error"]
            deid = self.deidentifier(rule)
            outcome = deid.deidentify_instance(instance)
            coerced = joined(deid.encode(instance))
        except DicomError as exc:
            return self._failed(rule, f"unreadable DICOM: {exc}", len(data), started, rule.on_failure)
        except Exception as exc:  # fail closed on anything: never store or send as received
            return self._failed(rule, f"{type(exc).__name__}: {safe_message(exc)}", len(data), started, rule.on_failure)
        elapsed = time.perf_counter() - started
        return Decision(COERCED, rule, coerced, outcome, milliseconds=elapsed * 1000, bytes_in=len(data))

    @staticmethod
    def _failed(rule, reason, size, started, on_failure) -> Decision:
        elapsed = time.perf_counter() - started if started else 0.0
        action = DISCARDED if on_failure == "discard" else REJECTED
        return Decision(action, rule, reason=reason, milliseconds=elapsed * 1000, bytes_in=size)

    def stats(self) -> dict:
        """Per rule, summed over the calling AE titles: matched, coerced, rejected, discarded,
        bytes_in, bytes_out, seconds, last_seen. The stored totals (every node's, as of the
        last flush) plus what this process counted since."""
        by_rule: dict[str, Counts] = {}
        for (rule, _), counts in self.statistics.rows().items():
            by_rule.setdefault(rule, Counts()).add(counts)
        shown = ("matched", "coerced", "rejected", "discarded", "bytes_in", "bytes_out", "seconds", "last_seen")
        return {rule: {key: value for key, value in counts.as_dict().items() if key in shown}
                for rule, counts in sorted(by_rule.items())}

    def activity(self) -> dict:
        """The statistics per rule and per calling AE title, with first and last seen and the
        last failure (stores/activity.py: ``Activity.summary``)."""
        return self.statistics.summary()

    def preview(self, data: bytes, rule_name: str | None = None, uri: str | None = None) -> tuple[bytes, Outcome]:
        """The administrator's dry run: coerce without storing, counting or linking."""
        chunks, outcome = self._preview_deidentifier(rule_name, uri).deidentify_chunks(data)
        return joined(chunks), outcome

    def preview_explained(self, data: bytes, rule_name: str | None = None, uri: str | None = None) -> dict:
        """The dry run explained: what the rule (or URI) makes of each attribute of ``data``, at
        any depth, and why (engine/explain.py); nothing stored, counted or linked, as
        :meth:`preview`. The answer shows values of ``data``: answer it, never log it."""
        deid = self._preview_deidentifier(rule_name, uri)
        chunks, outcome, record = deid.deidentify_recorded(data)
        coerced = read_instance(joined(chunks))  # the result as written, read back
        explained = explain(read_instance(data), coerced, record)  # the original, private attributes too
        return {"rule": rule_name or None, "uri": str(deid.uri), "sop_class_uid": outcome.sop_class_uid or None,
                **explained}

    def _preview_deidentifier(self, rule_name: str | None, uri: str | None) -> Deidentifier:
        """The de-identifier of a preview: of the active rule named, or of a URI (exactly one)."""
        if bool(rule_name) == bool(uri):
            raise ValueError("give exactly one rule or URI: ?rule=NAME, ?uri=deidentify:..., or the path "
                             "/coercion/preview/rule/NAME or /coercion/preview/uri/deidentify:...")
        if rule_name:
            rule = self.ruleset.by_name(rule_name)
            if rule is None:
                raise LookupError(f"no active rule is named {rule_name!r}")
            deid = self.deidentifier(rule)
        else:
            deid = Deidentifier(parse_uri(uri), self.keys, self.settings.tables,
                                PixelSettings(regions=self.ruleset.regions))
        return deid

    # -- C-FIND -----------------------------------------------------------------------------

    def find_rules(self, calling_aet: str, called_aet: str, query: Dataset, sop_class_uid: str = STUDY_ROOT_FIND,
                   ruleset: RuleSet | None = None, host: str | None = None) -> tuple[Rule | None, Rule | None]:
        """The C_FIND_RQ and C_FIND_RSP rules for a caller's query (role SCU: the peer asks us),
        of a query/retrieve model (the default) or the modality worklist (MODALITY_WORKLIST_FIND);
        ``host``: the caller's address, where Orthanc tells it."""
        ruleset = ruleset or self.ruleset
        found = []
        for dimse in FIND:
            found.append(ruleset.match(Transaction(dimse, "SCU", calling_aet, called_aet, host=host,
                                                   sop_class_uid=sop_class_uid, dataset=query)))
        return found[0], found[1]

    def deidentifier(self, rule: Rule) -> Deidentifier:
        return self._deidentifiers.get(_key(rule)) or self._deidentifier(rule)

    # -- MPPS -------------------------------------------------------------------------------

    def coerce_dataset(self, dataset: Dataset, transaction: Transaction, fallback: Rule | None = None) -> Decision:
        """Match ``transaction`` (an MPPS message; its dataset is what conditions look at) and
        de-identify ``dataset`` in place with the winning rule, or ``fallback`` when none wins.
        Counted, and its patient linked (role SCU) or its handed-out UIDs recorded (role SCP),
        as an instance is. Fails closed: on any failure the decision is REJECTED with the
        reason, and ``dataset`` must not be used."""
        rule = self.ruleset.match(transaction_with_dataset(transaction, dataset)) or fallback
        if rule is None:
            return Decision(UNCHANGED)
        started = time.perf_counter()
        try:
            outcome = self.deidentifier(rule).deidentify_dataset(dataset)
            decision = Decision(COERCED, rule, b"", outcome, milliseconds=(time.perf_counter() - started) * 1000,
                                calling_aet=transaction.calling_aet)
            self.confirm(decision)
        except Exception as exc:  # the engine or the linkage store failed: never keep or send as received
            decision = replace(self._failed(rule, f"{type(exc).__name__}: {safe_message(exc)}", 0, started, "reject"),
                               calling_aet=transaction.calling_aet)
            self.confirm(decision)
        return decision

    def record_find(self, rule: Rule, answers: int, handed_out, seconds: float, calling_aet: str | None = None) -> None:
        """Count a coerced C-FIND (from ``calling_aet``) and remember the pseudonyms its
        answers handed out."""
        uids = [(h.original, h.pseudonym) for h in handed_out if h.tag != PATIENT_ID]
        self.store.record_uids(uids)
        for h in handed_out:
            if h.tag == PATIENT_ID:
                self.store.record(h.pseudonym, h.issuer, h.original, rule.name, count=0)
        self.statistics.count(rule.name, calling_aet, coerced=answers, seconds=seconds)

    # -- linkage ----------------------------------------------------------------------------

    def authorised(self, credential: str | None, kind: str = "linkage") -> bool:
        """Whether ``credential`` is the configured one of its kind (compared in constant time)."""
        token = self.settings.admin_token if kind == "admin" else self.settings.linkage_token
        return bool(token and credential and hmac.compare_digest(token.encode(), credential.encode()))

    def linkage(self, pseudonym: str) -> list[dict]:
        return [link.as_dict() for link in self.store.lookup(pseudonym)]


def transaction_with_dataset(transaction: Transaction, dataset) -> Transaction:
    if transaction.dataset is not None:
        return transaction
    from dataclasses import replace

    return replace(transaction, dataset=dataset)


# The credentials, each from a file (or the variable itself): what it guards, its settings.
CREDENTIALS = {
    "linkage": ("re-identification", "LinkageTokenFile", "COERCION_LINKAGE_TOKEN"),
    "admin": ("administration", "AdminTokenFile", "COERCION_ADMIN_TOKEN"),
}
MIN_CREDENTIAL_LENGTH = 16


def _origins(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith(("http://", "https://"))
                                              for v in value):
        raise ValueError("Coercion.AllowedOrigins must be a list of origins like \"https://pacs.example.org\"")
    return tuple(v.rstrip("/") for v in value)


def _credential(env, values: dict, kind: str) -> str | None:
    """A credential from COERCION_<KIND>_TOKEN, else the file COERCION_<KIND>_TOKEN_FILE or
    Coercion.<Kind>TokenFile; a missing file leaves what it guards disabled (403)."""
    what, key, variable = CREDENTIALS[kind]
    token = env.get(variable)
    path = values[key]
    if not token and path and Path(path).exists():
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"Coercion.{key} {path}: {exc.strerror}") from None
    if token is not None and len(token) < MIN_CREDENTIAL_LENGTH:
        raise ValueError(f"the {what} credential must be at least {MIN_CREDENTIAL_LENGTH} characters long")
    return token or None


def audit_record(event: str, **fields) -> dict:
    """The one form of every audit line: ``event`` and ``time`` (UTC, ISO 8601) first, then
    snake_case fields; fields without a value are left out. Never PHI: callers give rule
    names, AE titles, addresses, routes, outcomes, UIDs of what was written, counts."""
    record = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record.update((key, value) for key, value in fields.items() if value is not None)
    return record


def audit_json(record: dict) -> str:
    """An audit record as the one line it is logged as."""
    return json.dumps(record, separators=(",", ":"))


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def safe_message(exc: BaseException) -> str:
    """The message of the project's own errors, which name files, rules, keys and reasons but
    never values; of any other exception only that it has one (pydicom's or another library's
    message may quote the data)."""
    if type(exc).__module__.split(".")[0] == __name__.split(".")[0]:
        return str(exc)[:300]
    return "details withheld (they may quote the data)"


def decision_fields(decision: Decision, origin: str, calling_aet: str | None, called_aet: str | None = None) -> dict:
    """The audit fields of a coerced or refused instance (event "coercion"), without PHI."""
    return {
        "action": decision.action, "rule": decision.rule.name if decision.rule else None,
        "origin": origin, "calling_aet": calling_aet, "called_aet": called_aet,
        "sop_class_uid": decision.outcome.sop_class_uid if decision.outcome else None,
        "sop_instance_uid": decision.outcome.sop_instance_uid if decision.outcome else None,
        "ms": round(decision.milliseconds, 2), "reason": decision.reason or None,
    }
