"""Rule checks: what a rule set will do against an Orthanc configuration, before it bites.

Errors are rules that do not load (the file, the rule and the field). Warnings are rules that
load but will not do what they say with this configuration:

* a rule for what peers send (role SCU) whose sending AE titles name no modality of
  ``DicomModalities`` while ``DicomAlwaysAllowStore`` is false: Orthanc refuses those callers
  before any rule sees them, so the rule never matches;
* a rule for what Orthanc sends (role SCP) whose receiving AE titles name no modality: nothing
  is ever sent there;
* a modality that may C-GET (``AllowGet`` not false, or any caller with ``DicomAlwaysAllowGet``)
  while an outgoing rule names it: C-GET retrieves do not go through the rules. An error, and a
  refusal to start (``startup_refusals``), unless ``Coercion.UnsafeCGetBypassesRules`` accepts it;
* modalities whose AE titles are the same as Orthanc compares them (case, padding): Orthanc
  admits a caller under either, so a rule that means one of them covers both;
* a rule naming a modality (``sending-modality``, ``receiving-modality``) that does not exist.

Plain code (the rules and a configuration dictionary): ``coercion check-rules`` and the plugin's
start-up use it alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import configuration
from .configuration import CGET_ACKNOWLEDGEMENT, OPEN_REST_API_ACKNOWLEDGEMENT
from .rules import DICOM, Peers, RuleError, RuleSet, Transaction, load_rules

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    level: str  # ERROR or WARNING
    message: str  # names the file and the rule

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def modalities(config: dict) -> dict[str, dict]:
    """DicomModalities by symbolic name, each as {"AET", "Host", "AllowGet"...}."""
    found = {}
    for name, value in (config.get("DicomModalities") or {}).items():
        if isinstance(value, list) and len(value) >= 2:
            value = {"AET": value[0], "Host": value[1]}
        if isinstance(value, dict) and isinstance(value.get("AET"), str):
            found[name] = value
    return found


def configured_peers(config: dict) -> Peers:
    """How Orthanc compares AE titles with this configuration, and its modalities by name."""
    return Peers(config.get("StrictAetComparison") is True,
                 {name: m["AET"] for name, m in modalities(config).items()})


def check_ruleset(ruleset: RuleSet, config: dict) -> list[Finding]:
    findings = []
    peers = modalities(config)
    compared = configured_peers(config)
    titles = [m["AET"] for m in peers.values()]
    always_allow = config.get("DicomAlwaysAllowStore", True) is not False
    shared: dict[str, list[str]] = {}
    for name, peer in sorted(peers.items()):
        shared.setdefault(compared.key(peer["AET"]).upper(), []).append(name)
    for names in shared.values():
        if len(names) > 1:
            listed = ", ".join(f"{n!r} ({peers[n]['AET']!r})" for n in names)
            findings.append(Finding(WARNING, f"DicomModalities {listed} have the same AE title up to letter case or "
                                             "padding: Orthanc may admit a caller of either under the other, and "
                                             "a rule that names one of them applies to both; give them distinct "
                                             "AE titles"))
    for rule in (*ruleset.rules, *(r for r in ruleset.routes if r not in ruleset.rules)):
        where = f"{rule.source}: rule {rule.name!r}"
        for field, matcher in (("sending-modality", rule.sending_aet), ("receiving-modality", rule.receiving_aet)):
            for name in matcher.modalities:
                if name not in peers:
                    findings.append(Finding(WARNING, f"{where}: field '{field}': no modality {name!r} in "
                                                     "DicomModalities: it matches no caller until one is added"))
        if rule.role == "SCU" and rule.dimse == "C_STORE_RQ" and rule.sending_aet.entries and not always_allow \
                and not any(rule.sending_aet.matches(t, compared) for t in titles):
            findings.append(Finding(WARNING, f"{where}: can never match: no modality of DicomModalities has a "
                                             "sending AE title it names, and with DicomAlwaysAllowStore false "
                                             "Orthanc refuses every other caller"))
        for field, matcher, known, where_known in (
                ("receiving-peer", rule.receiving_peer, config.get("OrthancPeers") or {}, "OrthancPeers"),
                ("receiving-dicomweb-server", rule.receiving_dicomweb_server,
                 (config.get("DicomWeb") or {}).get("Servers") or {}, "DicomWeb.Servers")):
            if matcher.entries and not any(matcher.matches(name) for name in known):
                findings.append(Finding(WARNING, f"{where}: field '{field}': names no entry of {where_known}: it "
                                                 "applies only once one is added (PUT at run time)"))
        if rule.role == "SCP" and rule.receiving_aet.entries and not any(rule.receiving_aet.matches(t, compared)
                                                                          for t in titles):
            findings.append(Finding(WARNING, f"{where}: names no modality of DicomModalities as receiving AE title: "
                                             "Orthanc sends nowhere this rule applies"))
    # An error unless acknowledged: the plugin refuses to start so (startup_refusals).
    acknowledged = configuration.read(config, {})[CGET_ACKNOWLEDGEMENT] is True
    for message in cget_bypasses(ruleset, config):
        findings.append(Finding(WARNING, f"{message} (accepted: Coercion.{CGET_ACKNOWLEDGEMENT} is true)")
                        if acknowledged else Finding(ERROR, message + _CGET_OVERRIDE))
    return findings


_CGET_OVERRIDE = (", or, to accept that it retrieves originals, set \"Coercion\": "
                  f"{{\"{CGET_ACKNOWLEDGEMENT}\": true}}")


def cget_bypasses(ruleset: RuleSet, config: dict) -> list[str]:
    """How a peer that outgoing rules (C_STORE_RQ, role SCP) name may C-GET around them: Orthanc
    answers C-GET itself, no plugin callback sees what it sends, so the peer gets the originals.
    Each names the rule, the modality or the setting that lets it, and the setting to change."""
    # Rules that may apply to a DICOM send (those naming only peers or DICOMweb servers do not).
    outgoing = [r for r in ruleset.rules if r.dimse == "C_STORE_RQ" and r.role == "SCP"
                and (r.receiving_aet.entries or not r.names_other_exits(DICOM))]
    if not outgoing:
        return []
    if config.get("DicomAlwaysAllowGet") is True:  # Orthanc 1.11+: any caller, listed or not
        names = ", ".join(f"{r.name!r} ({r.source})" for r in outgoing)
        return [(f"DicomAlwaysAllowGet is true: any caller may C-GET, whatever DicomModalities says, and C-GET "
                 f"retrieves do not go through the rules ({names}): a caller with an AE title they name retrieves "
                 "originals. Set \"DicomAlwaysAllowGet\": false")]
    if config.get("DicomModalitiesInDatabase") is True:
        # The modalities live in Orthanc's database, out of the configuration's sight: none can be
        # checked here, and any of them may C-GET unless it says otherwise.
        names = ", ".join(f"{r.name!r} ({r.source})" for r in outgoing)
        return [(f"DicomModalitiesInDatabase is true: the modalities are in Orthanc's database, where their "
                 f"\"AllowGet\" cannot be checked before Orthanc starts, and C-GET retrieves do not go through the "
                 f"rules ({names}): keep the modalities in the configuration (DicomModalitiesInDatabase false) with "
                 "\"AllowGet\": false for those the rules name")]
    compared = configured_peers(config)
    orthanc_aet = config.get("DicomAet", "ORTHANC")
    found = []
    for name, peer in modalities(config).items():
        if peer.get("AllowGet") is False:
            continue
        transaction = Transaction("C_STORE_RQ", "SCP", orthanc_aet, peer["AET"], peer.get("Host"))
        rule = next((r for r in outgoing if r.matches_peers(transaction, compared)), None)
        if rule is not None:
            found.append(f"{rule.source}: rule {rule.name!r}: modality {name!r} (AE title {peer['AET']!r}) may "
                         "C-GET (its \"AllowGet\" is not false), and C-GET retrieves do not go through the rules: "
                         "it retrieves originals. Set \"AllowGet\": false for it in DicomModalities")
    return found


# The user Orthanc makes itself when authentication is on and no user is declared (its log
# says "Your setup is INSECURE"): a credential everyone knows.
DEFAULT_USER = ("orthanc", "orthanc")


def rest_api_authenticated(config: dict) -> bool:
    """Whether Orthanc asks HTTP clients for a credential nobody can guess, as Orthanc decides
    it: AuthenticationEnabled (when absent, Orthanc 1.5.8 and later enable it with remote
    access), with RegisteredUsers of its own: none, or only the public orthanc:orthanc that
    Orthanc then creates, is no credential."""
    enabled = config.get("AuthenticationEnabled")
    if not isinstance(enabled, bool):
        enabled = config.get("RemoteAccessAllowed") is True
    users = config.get("RegisteredUsers")
    if not enabled or not isinstance(users, dict) or not users:
        return False
    return DEFAULT_USER not in users.items()


def startup_refusals(ruleset: RuleSet, config: dict) -> list[str]:
    """Why the plugin must not start with these rules in this configuration (empty: it may).
    Each reason names the setting to change and the acknowledgement key that overrides it."""
    settings = configuration.read(config, {})
    reasons = []
    has_rules = bool(ruleset.rules or ruleset.routes)
    if has_rules and not rest_api_authenticated(config) and settings[OPEN_REST_API_ACKNOWLEDGEMENT] is not True:
        reasons.append(
            "Orthanc's REST API is open (AuthenticationEnabled is false, or no user of its own in RegisteredUsers, or "
            "only Orthanc's public orthanc:orthanc): any local process can read every original "
            "(GET /patients), add a modality or compute a pseudonym, whatever the rules do. Set "
            "\"AuthenticationEnabled\": true with RegisteredUsers (coercion serve adds the user of "
            "Coercion.RestCredentialFile), or, if another plugin authenticates every request, set "
            f"\"Coercion\": {{\"{OPEN_REST_API_ACKNOWLEDGEMENT}\": true}}")
    if settings[CGET_ACKNOWLEDGEMENT] is not True:
        reasons += [message + _CGET_OVERRIDE for message in cget_bypasses(ruleset, config)]
    return reasons


def check_rules(directory, config: dict) -> list[Finding]:
    """The findings of the rules folder ``directory`` against ``config`` (errors first)."""
    try:
        ruleset = load_rules(directory, configured_peers(config))
    except RuleError as exc:
        return [Finding(ERROR, str(exc))]
    return check_ruleset(ruleset, config)


def exit_status(findings: list[Finding]) -> int:
    """0: nothing found; 1: warnings; 2: errors."""
    if any(f.level == ERROR for f in findings):
        return 2
    return 1 if findings else 0
