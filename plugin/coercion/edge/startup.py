"""Start-up of the plugin: configuration, rules, and the callbacks the rules need.

Imported by ``plugin/orthanc_entry.py`` inside Orthanc's Python plugin (API 4.0, Orthanc
1.10+). ``start`` reads the configuration, loads the rules (stopping Orthanc if they are bad)
and registers the callbacks the rules need, each in the module of its direction (see the
package docstring); callbacks that Orthanc accepts only at start-up are registered only when
the rules at start-up need them, and a reload that would need one more is refused.
"""

from __future__ import annotations

import json
import os
import socket
import threading

import orthanc

from ..engine.quiet import quiet_pydicom
from ..rules import Peers, RuleError, RuleSet, aet_key
from ..service import FIND, CoercionService, Settings, safe_message
from .. import configuration
from ..checks import check_ruleset, startup_refusals
from ..stores.forwards import ForwardQueue
from .capabilities import probe
from .find import find_settings, on_find, on_find_connection
from .ingest import on_cstore_instance, on_http_request, on_received_instance
from .mpps import start_mpps
from .outgoing import on_modality_store, on_move, on_move_connection, on_move_driver
from .peers import dicomweb_root, on_peer_store, on_store_straight, stow_route
from .views import load_views
from .query import on_modality_query, on_query_read
from .rest import on_rest, on_rest_index, ui_file
from .forwarding import on_change, start_forward_worker
from .state import modalities, release_hooks, state, stop_orthanc
from .worklist import start_worklists


def _check_restart_needed(ruleset: RuleSet) -> None:
    """Callbacks are registered at start-up only, and only those the rules need (an idle
    change callback still competes with ingest for the interpreter): a reload that needs
    one more is refused."""
    if not state.outgoing_registered and any(r.dimse == "C_STORE_RQ" and r.role == "SCP" for r in ruleset.rules):
        raise RuleError("rules for C_STORE_RQ with role SCP were added while Orthanc runs without them: restart "
                        "Orthanc so that its sends and C-MOVE retrieves go through them (the old rules stay active)")
    if not state.query_registered and any(r.dimse in FIND and r.role == "SCP" for r in ruleset.rules):
        raise RuleError("rules for C_FIND_RQ or C_FIND_RSP with role SCP were added while Orthanc runs without them: "
                        "restart Orthanc so that the queries it sends go through them (the old rules stay active)")
    if not state.find_registered and any(r.dimse in FIND and r.role == "SCU" for r in ruleset.rules):
        raise RuleError("rules for C_FIND_RQ or C_FIND_RSP with role SCU were added while Orthanc runs without them: "
                        "restart Orthanc so that its C-FIND SCP applies them (the old rules stay active)")
    if not state.routes_registered and ruleset.store_routes:
        raise RuleError("routes (rules for C_STORE_RQ with 'forward') were added while Orthanc runs without them: restart Orthanc "
                        "so that what it receives can be forwarded (the old rules stay active)")


def _refuse_unsafe(ruleset: RuleSet, config: dict) -> None:
    """What stops Orthanc at start-up refuses a reload too (rules that a C-GET would bypass)."""
    refusals = startup_refusals(ruleset, config)
    if refusals:
        raise RuleError("; ".join(refusals) + " (the old rules stay active)")


# -- start-up -----------------------------------------------------------------------------


def live_modalities() -> dict[str, str]:
    """The AE title of each DicomModalities entry as Orthanc knows it now (PUT /modalities/{id}
    changes it while Orthanc runs)."""
    return {name: str(peer.get("AET", "")) for name, peer in modalities().items()}


def start() -> None:
    """Read the configuration, load the rules, register what they need (each step stops
    Orthanc, saying why, when it cannot be done: the plugin never runs half-armed)."""
    quiet_pydicom()
    config = json.loads(orthanc.GetConfiguration())
    state.capabilities = probe(config)
    orthanc.LogWarning(f"coercion: {state.capabilities.summary()}")
    _open_service(config)
    refusals = startup_refusals(state.service.ruleset, config)
    if refusals:  # fail closed: a configuration around the plugin that defeats the rules
        stop_orthanc("; ".join(refusals))
    _keep_statistics()
    _load_views(config)
    state.dicomweb_root = dicomweb_root(config)
    _register_callbacks(config)
    state.service.validators.append(_check_restart_needed)
    state.service.validators.append(lambda ruleset: _refuse_unsafe(ruleset, config))
    _start_forwarding(config)
    orthanc.LogWarning(
        f"coercion: {len(state.service.ruleset.rules)} rule(s) active from {state.service.settings.rules_directory}"
    )
    _warn_about_rules(config)
    _start_scps(config)


def _open_service(config: dict) -> None:
    """The service over Orthanc's configuration (rules, keys, the stores it opens)."""
    try:
        state.orthanc_aet = config.get("DicomAet", "ORTHANC")
        state.scu_timeout = int(config.get("DicomScuTimeout", 10))
        state.stable_age = int(config.get("StableAge", 60))
        settings = Settings.from_configuration(config)
        for value in (config.get("DicomModalities") or {}).values():
            if isinstance(value, list) and len(value) >= 2:
                aet, host = value[0], value[1]
            elif isinstance(value, dict) and "AET" in value:
                aet, host = value["AET"], value.get("Host")
            else:
                continue
            state.modality_hosts[aet] = host  # the exact title first, as before
            state.modality_hosts.setdefault(("key", aet_key(aet, settings.strict_aet)), host)
        # Modalities by name are read live (ttl 0): Orthanc admits a changed AE title at once.
        # Opens the stores: the linkage store and the activity store (Coercion.ActivityDatabase).
        caps = state.capabilities
        state.service = CoercionService(settings, peers=Peers(settings.strict_aet, live_modalities, ttl=0),
                                        find_caller_hosts=caps.find_with_connection and caps.worklist_with_connection)
    except Exception as exc:  # RuleError, SecretError, bad settings, StoreError: all stop Orthanc
        stop_orthanc(str(exc))


def _load_views(config: dict) -> None:
    """The de-identified DICOMweb views (Coercion.Views) and their credentials."""
    try:
        load_views(configuration.views_of(config), config)
    except (OSError, ValueError) as exc:  # a view that cannot be opened as configured: say which
        stop_orthanc(f"{type(exc).__name__}: {exc}")


def _register_callbacks(config: dict) -> None:
    """What every rule set needs, then what the rules at start-up need: Orthanc takes some
    callbacks only now, and an idle one still costs (a reload needing more is refused)."""
    rules = state.service.ruleset.rules
    orthanc.RegisterIncomingHttpRequestFilter(on_http_request)
    orthanc.RegisterReceivedInstanceCallback(on_received_instance)
    orthanc.RegisterIncomingCStoreInstanceFilter(on_cstore_instance)
    orthanc.RegisterRestCallback("/coercion", on_rest_index)
    orthanc.ExtendOrthancExplorer(ui_file("explorer.js").decode())  # a link to /coercion/ui/
    orthanc.RegisterRestCallback("/coercion/(.*)", on_rest)
    if any(r.dimse == "C_STORE_RQ" and r.role == "SCP" for r in rules):
        # Both replace Orthanc's own: without outgoing rules, Orthanc's route and C-MOVE SCP stay.
        orthanc.RegisterRestCallback("/modalities/([^/]+)/store", on_modality_store)
        # Peers and files posted straight: the plugin's routes come before Orthanc's own. The
        # DICOMweb plugin's STOW-RS client is refused by the HTTP filter where rules apply.
        orthanc.RegisterRestCallback("/peers/([^/]+)/store", on_peer_store)
        orthanc.RegisterRestCallback("/(peers|modalities)/([^/]+)/store-straight", on_store_straight)
        state.stow_route = stow_route(state.dicomweb_root)
        _register_move_scp()
        state.outgoing_registered = True
    if any(r.dimse in FIND and r.role == "SCU" for r in rules):
        # Replaces Orthanc's C-FIND SCP as a whole: without C-FIND rules, Orthanc's own answers.
        state.find_settings = find_settings(config)
        if state.capabilities.find_with_connection:  # the caller's host, for sending-host
            orthanc.RegisterFindCallback2(on_find_connection)
        else:
            orthanc.RegisterFindCallback(on_find)
        state.find_registered = True
    if any(r.dimse in FIND and r.role == "SCP" for r in rules):
        # Called instead of Orthanc's own routes; queries no rule applies to go to Orthanc's.
        orthanc.RegisterRestCallback(
            "/modalities/([^/]+)/(query|find|find-patient|find-study|find-series|find-instance|find-worklist)",
            on_modality_query)
        orthanc.RegisterRestCallback(
            "/queries/([^/]+)/answers((?:/[0-9]+/(?:content|query-studies|query-series|query-instances))?)",
            on_query_read)
        state.query_registered = True


def _register_move_scp() -> None:
    """The C-MOVE SCP in the newest form the SDK has: with the DICOM connection (7.0), in
    Orthanc's four parts (4.2: one sub-operation per instance), else the simple callback."""
    caps = state.capabilities
    parts = (lambda driver: driver.size(), lambda driver: driver.apply(), lambda driver: None)
    if caps.move_with_connection:
        orthanc.RegisterMoveCallback3(on_move_connection, *parts)
    elif caps.move_with_suboperations:
        orthanc.RegisterMoveCallback2(on_move_driver, *parts)
    else:
        orthanc.RegisterMoveCallback(on_move)


def _start_forwarding(config: dict) -> None:
    """The forwarding queue (its status stays readable without routes), the change log it
    follows while routes are loaded, and its worker."""
    try:
        # Several Orthancs on one database tell their leases apart by node name:
        # Coercion.NodeName, else host, AE title and DICOM port.
        values = configuration.read(config, os.environ)
        node = values["NodeName"] or \
            f"{socket.gethostname()}:{config.get('DicomAet', 'ORTHANC')}:{config.get('DicomPort', 4242)}"
        lease = values["ForwardLeaseSeconds"]
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease < 4:
            raise ValueError("Coercion.ForwardLeaseSeconds must be a number of seconds, at least 4")
        state.forwards = ForwardQueue(state.service.settings.forwards_database, str(node),
                                      state.service.settings.database_password_file, lease)
    except Exception as exc:  # StoreError: an unusable file or location
        stop_orthanc(str(exc))
    if state.service.ruleset.store_routes:  # MPPS routes are armed by the MPPS SCP itself
        orthanc.RegisterOnChangeCallback(on_change)
        state.routes_registered = True
    try:
        if state.routes_registered:
            state.forwards.follow_changes()
        else:  # what comes in while no route is loaded is not for the routes a later start brings
            state.forwards.unfollow_changes()
    except Exception as exc:
        stop_orthanc(safe_message(exc))
    if state.service.ruleset.routes:
        start_forward_worker()


def _start_scps(config: dict) -> None:
    """The worklist SCP and the MPPS SCP, when the configuration asks for them."""
    try:
        start_worklists(config)
    except ValueError as exc:  # bad settings, or the folder missing with its parent (both named)
        stop_orthanc(f"the worklist SCP cannot start: {exc}")
    except Exception as exc:  # another plugin answers worklists already
        stop_orthanc(f"the worklist SCP cannot start: {safe_message(exc)} (Orthanc lets one plugin answer "
                     "worklists: leave out the ModalityWorklists sample plugin when the coercion plugin serves them)")
    start_mpps(config)
    if state.mpps_exchange is not None:
        # The SCP arms MPPS forwards for routes a reload may add: the worker must be there.
        start_forward_worker()


def _keep_statistics() -> None:
    """The service writes its counts to the activity store every few seconds: a store that
    cannot be written is logged (once, and once more when it can again), and what was counted
    since the last write is written when Orthanc stops (before the interpreter joins its
    threads: an atexit handler would run too late)."""
    activity = state.service.statistics
    activity.notify = lambda message: orthanc.LogWarning(
        f"coercion: {message}" if message else "coercion: statistics are written to the activity store again")
    try:
        threading._register_atexit(activity.close)  # Python 3.9+, as concurrent.futures does
    except (AttributeError, RuntimeError):
        import atexit

        atexit.register(activity.close)


def _warn_about_rules(config: dict) -> None:
    """What the rules will not do with this configuration (checks.py): a rule that can never
    match, an outgoing rule for an unknown modality, a peer that may C-GET around the rules."""
    state.config = config
    state.rule_warnings = [finding.message for finding in check_ruleset(state.service.ruleset, config)]
    for warning in state.rule_warnings:
        orthanc.LogWarning(f"coercion: {warning}")
    if any(r.dimse == "C_STORE_RQ" and r.role == "SCU" for r in state.service.ruleset.rules) \
            and config.get("OverwriteInstances", False) not in (True, "Always"):
        release_hooks.append(_warn_about_known_instances)


def _warn_about_known_instances(release) -> None:
    """On Orthanc 1.13 and later, what C-STORE rules cannot do without OverwriteInstances (said
    once the release is known: at the first request that asks for it, the rules' page too)."""
    if release.known_instances_skip_filters:
        warning = ("this Orthanc answers an instance it holds already with Success before any plugin learns who "
                   "sent it: a caller whose rule coerces, sending an instance whose original Orthanc holds (from "
                   "another caller), gets Success and no coerced copy is stored; set \"OverwriteInstances\": true "
                   "to have every C-STORE go through the rules")
        state.release_warnings = [warning]
        orthanc.LogWarning(f"coercion: {warning}")
