"""Rule checks: what a rule set will do against an Orthanc configuration, before it bites.

Errors are rules that do not load (the file, the rule and the field). Warnings are rules that
load but will not do what they say with this configuration:

* a rule for what peers send (role SCU) whose sending AE titles name no modality of
  ``DicomModalities`` while ``DicomAlwaysAllowStore`` is false: Orthanc refuses those callers
  before any rule sees them, so the rule never matches;
* a rule for what Orthanc sends (role SCP) whose receiving AE titles name no modality: nothing
  is ever sent there;
* a modality that may C-GET (``AllowGet`` not false) while an outgoing rule names it: C-GET
  retrieves do not go through the rules.

Plain code (the rules and a configuration dictionary): ``coercion check-rules`` and the plugin's
start-up use it alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rules import RuleError, RuleSet, Transaction, load_rules

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


def check_ruleset(ruleset: RuleSet, config: dict) -> list[Finding]:
    findings = []
    peers = modalities(config)
    titles = [m["AET"] for m in peers.values()]
    always_allow = config.get("DicomAlwaysAllowStore", True) is not False
    for rule in (*ruleset.rules, *(r for r in ruleset.routes if r not in ruleset.rules)):
        where = f"{rule.source}: rule {rule.name!r}"
        if rule.role == "SCU" and rule.dimse == "C_STORE_RQ" and rule.sending_aet.entries and not always_allow \
                and not any(rule.sending_aet.matches(t) for t in titles):
            findings.append(Finding(WARNING, f"{where}: can never match: no modality of DicomModalities has a "
                                             "sending AE title it names, and with DicomAlwaysAllowStore false "
                                             "Orthanc refuses every other caller"))
        if rule.role == "SCP" and rule.receiving_aet.entries and not any(rule.receiving_aet.matches(t) for t in titles):
            findings.append(Finding(WARNING, f"{where}: names no modality of DicomModalities as receiving AE title: "
                                             "Orthanc sends nowhere this rule applies"))
    outgoing = [r for r in ruleset.rules if r.dimse == "C_STORE_RQ" and r.role == "SCP"]
    orthanc_aet = config.get("DicomAet", "ORTHANC")
    for name, peer in peers.items():
        if peer.get("AllowGet") is False:
            continue
        transaction = Transaction("C_STORE_RQ", "SCP", orthanc_aet, peer["AET"], peer.get("Host"))
        for rule in outgoing:
            if rule.matches_peers(transaction):
                findings.append(Finding(WARNING, f"{rule.source}: rule {rule.name!r}: modality {name!r} may C-GET, "
                                                 "and C-GET retrieves do not go through the rules: set \"AllowGet\": "
                                                 "false for it in DicomModalities"))
                break
    return findings


def check_rules(directory, config: dict) -> list[Finding]:
    """The findings of the rules folder ``directory`` against ``config`` (errors first)."""
    try:
        ruleset = load_rules(directory)
    except RuleError as exc:
        return [Finding(ERROR, str(exc))]
    return check_ruleset(ruleset, config)


def exit_status(findings: list[Finding]) -> int:
    """0: nothing found; 1: warnings; 2: errors."""
    if any(f.level == ERROR for f in findings):
        return 2
    return 1 if findings else 0
