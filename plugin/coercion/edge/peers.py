"""Ways out over HTTP, through the rules for role SCP: Orthanc peers and DICOMweb servers.

Rules name them as they name modalities (``receiving-peer``: a key of OrthancPeers;
``receiving-dicomweb-server``: a key of DicomWeb.Servers). A peer or server is also known by
its URL: another name Orthanc is given for a URL a rule names gets that rule.

* ``POST /peers/{id}/store`` (the plugin's route replaces Orthanc's: plugins' routes come first,
  whatever the load order): a peer a rule names gets coerced copies, each sent through Orthanc's
  own ``/peers/{id}/store-straight`` (Orthanc keeps the peer's URL and credentials); any other
  peer gets Orthanc's own send, answered as Orthanc answers.
* ``POST /peers/{id}/store-straight`` and ``/modalities/{id}/store-straight`` (one file posted
  through Orthanc, never stored): coerced for a receiver a rule names, else Orthanc's own.
* ``POST {DicomWeb.Root}servers/{id}/stow``: the DICOMweb plugin's route. Two plugins on one
  route answer in the order they were loaded (the book: "impossible to tell which route will be
  called"), so it is not taken over: the HTTP filter refuses it for a server a rule names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import orthanc

from ..exchanges.orthanc_api import JsonTooDeep, OrthancError, read_peer_store_request
from ..exchanges.sends import FolderSpool, SendJob
from ..exchanges.stow import StowSender, configured_server, read_stow_request
from ..rules import DICOMWEB, PEER, RuleSet, Transaction
from ..service import COERCED, DISCARDED, REJECTED
from .answers import (
    answer_error,
    answer_json,
    answer_orthanc_exception,
    exception_parts,
    guarded_route,
    orthanc_error,
    passthrough_post,
    run_as_orthanc_job,
)
from .outgoing import answer_send, instances_of, job_runner, no_rule_applies, outgoing_transaction, resource_exists
from .state import log_audit, log_event, modalities, orthanc_release, state

_ROUTE = "peers/{}/store"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _url_key(url: object) -> str | None:
    """A URL as two names of one server compare: scheme and host without case, no credentials,
    no default port, no trailing slash (None: no URL). The same spelling of one server, not
    every spelling: a host name and its address are two servers here."""
    try:
        parts = urlsplit(str(url or "").strip())
        port = parts.port
    except ValueError:  # a port that is not a number: the text as it is
        return str(url).strip().lower() or None
    if not parts.scheme or not parts.hostname:
        return None
    port = port if port not in (None, _DEFAULT_PORTS.get(parts.scheme.lower())) else None
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}{f':{port}' if port else ''}{parts.path.rstrip('/')}"


def _host(entry: object) -> str | None:
    try:
        return urlsplit(str(entry.get("Url") or "")).hostname if isinstance(entry, dict) else None
    except ValueError:
        return None


def _aliases(name: str, known: dict) -> list[str]:
    """``name`` first, then the other names of its URL (sorted): a rule may name any of them."""
    url = _url_key(known[name].get("Url")) if isinstance(known.get(name), dict) else None
    if url is None:
        return [name]
    return [name, *sorted(n for n, e in known.items() if n != name and isinstance(e, dict)
                          and _url_key(e.get("Url")) == url)]


def _transaction(way_out: str, name: str, known: dict, ruleset: RuleSet) -> Transaction:
    """Sending to the peer or server ``name``: the name a rule knows it by, if any; the host of
    its URL is the receiver's host (``sending-host`` of a rule for role SCP)."""
    host = _host(known.get(name))
    for alias in _aliases(name, known):
        transaction = Transaction("C_STORE_RQ", "SCP", state.orthanc_aet, host=host, exit=way_out, target=alias)
        if ruleset.may_match(transaction):
            return transaction
    return Transaction("C_STORE_RQ", "SCP", state.orthanc_aet, host=host, exit=way_out, target=name)


def peers() -> dict:
    """Orthanc's peers as it knows them now (PUT /peers/{id} changes them while it runs)."""
    return json.loads(orthanc.RestApiGet("/peers?expand"))


def peer_transaction(name: str, ruleset: RuleSet) -> Transaction:
    return _transaction(PEER, name, peers(), ruleset)


# -- POST /peers/{id}/store ------------------------------------------------------------------

@guarded_route("peer store", "nothing more was sent")
def on_peer_store(output, uri, request):
    if request["method"] != "POST":
        return output.SendMethodNotAllowed("POST")
    name, body = request["groups"][0], request.get("body", b"")
    ruleset = state.service.ruleset
    transaction = peer_transaction(name, ruleset)
    if not ruleset.may_match(transaction):  # Orthanc's own send, answered as Orthanc answers
        return _orthanc_peer_store(output, uri, body, name)
    store = _read_store(output, uri, body, name)
    if store is None:
        return None
    unsupported = [key for key in ("Transcode", "Compress") if store.arguments.get(key) not in (None, False)]
    if unsupported:
        return orthanc_error(output, uri, "POST", "BadRequest",
                             f"coercion rules apply to peer {name!r}; coerced sends do not support "
                             f"{', '.join(unsupported)} yet: leave them out")
    instances = [i for resource in store.resources for i in instances_of(resource)]
    planned = plan_peer_send(name, transaction, instances, list(store.resources), store.permissive, ruleset)
    if planned is None:  # only the data could tell, and no rule applies to any of it
        return _orthanc_peer_store(output, uri, body, name)
    job, run = planned
    log_event("send", route=_ROUTE.format(name), outcome="started", job=job.id, peer=name,
              instances=len(instances), synchronous=store.synchronous)
    return answer_send(output, uri, job, run, store.synchronous)


def _orthanc_peer_store(output, uri: str, body: bytes, name: str) -> None:
    """Orthanc's own /peers/{id}/store: its checks as it answers them, details included (the SDK
    gives a plugin only an error's code), a synchronous send as a job waited for (its errors
    with their details), an asynchronous one as Orthanc's route answers it."""
    store = _read_store(output, uri, body, name)
    if store is None:
        return None
    if not store.synchronous:
        return passthrough_post(output, uri, body)
    return run_as_orthanc_job(output, uri, store.body)


def _read_store(output, uri: str, body: bytes, name: str):
    """The request after Orthanc's own checks, or None when one failed (answered as Orthanc
    answers it, details included: the SDK gives a plugin only an error's code)."""
    try:
        return read_peer_store_request(body, resource_exists, lambda peer: peer in peers(), name, orthanc_release())
    except OrthancError as error:
        answer_error(output, "POST", uri, error)
    except JsonTooDeep as exc:  # Orthanc's own reader would crash on it: never handed on
        orthanc_error(output, uri, "POST", "BadFileFormat", str(exc))
    return None


def plan_peer_send(name: str, transaction: Transaction, instances: list[str], resources: list[str],
                   permissive: bool, ruleset: RuleSet):
    """A send job to the peer ``name`` and the function that runs it, or None when no rule
    coerces any of the instances (Orthanc's own send is then exactly right)."""
    if no_rule_applies(transaction, instances, ruleset):
        return None
    job = state.sends.add(SendJob(name, "", transaction.calling_aet, instances, resources, permissive,
                                  way_out=PEER))
    return job, job_runner(job, transaction, ruleset,
                           lambda folder: StraightSender(f"/peers/{name}/store-straight", folder),
                           "PEER-STORE", f"peer:{name}", peer=name)


class StraightSender(FolderSpool):
    """Instances kept in a private folder, each posted to Orthanc's own ``.../store-straight``
    route (a plugin's RestApiPost reaches Orthanc's route, not the plugin's), then removed."""

    def __init__(self, route: str, folder: str | Path):
        super().__init__(folder)
        self.route = route

    def send(self, items: list[tuple[str, Path]]) -> list[tuple[str, str | None]]:
        outcome = []
        for instance_id, path in items:
            try:
                orthanc.RestApiPost(self.route, path.read_bytes())
                outcome.append((instance_id, None))
            except orthanc.OrthancException as exc:
                outcome.append((instance_id, f"sending failed: {_orthanc_message(exc)}"))
            finally:
                path.unlink(missing_ok=True)
        return outcome


def _orthanc_message(exc) -> str:
    code, message = exception_parts(exc)
    return f"{message} (Orthanc error {code})"


# -- POST /peers/{id}/store-straight, /modalities/{id}/store-straight ---------------------------

@guarded_route("store-straight", "nothing was sent")
def on_store_straight(output, uri, request):
    if request["method"] != "POST":
        return output.SendMethodNotAllowed("POST")
    kind, name, body = request["groups"][0], request["groups"][1], request.get("body", b"")
    ruleset = state.service.ruleset
    if kind == "peers":
        known = peers()
        if name not in known:  # Orthanc's own answer for an unknown peer
            return passthrough_post(output, uri, body)
        transaction, receiver = _transaction(PEER, name, known, ruleset), f"peer:{name}"
    else:
        modality = modalities().get(name)
        if modality is None:  # Orthanc's own answer for an unknown modality
            return passthrough_post(output, uri, body)
        transaction, receiver = outgoing_transaction(modality), modality["AET"]
    if not ruleset.may_match(transaction):
        return passthrough_post(output, uri, body)
    decision = state.service.coerce(bytes(body), transaction, ruleset)
    if decision.action in (REJECTED, DISCARDED, COERCED):
        log_audit(decision, "STORE-STRAIGHT", transaction.calling_aet, receiver)
    if decision.action == REJECTED:
        return orthanc_error(output, uri, "POST", "BadRequest", f"coercion refused: {decision.reason}; nothing "
                             "was sent")
    if decision.action == DISCARDED:
        return answer_json(output, {"Coercion": {"Rule": decision.rule.name if decision.rule else None,
                                                 "Discarded": True}})
    data = decision.data if decision.action == COERCED else bytes(body)
    try:
        answer = orthanc.RestApiPost(f"/{kind}/{name}/store-straight", data)
    except orthanc.OrthancException as exc:
        return answer_orthanc_exception(output, uri, "POST", exc)
    output.AnswerBuffer(answer, "application/json")


# -- POST /coercion/dicom-web/servers/{id}/stow: coerced STOW-RS sends ----------------------------

def coerced_stow(output, request, route, match):
    """The DICOMweb plugin's STOW-RS client request, sent coerced to a server a rule names (the
    plugin's own client: exchanges/stow.py); a server no rule names is handed to the DICOMweb
    plugin's route as it is."""
    name, body, uri = match.group("name"), request.get("body", b""), "/coercion/" + route
    ruleset = state.service.ruleset
    transaction = dicomweb_transaction(name, ruleset)
    if not ruleset.may_match(transaction):
        try:
            answer = orthanc.RestApiPostAfterPlugins(f"{state.dicomweb_root}servers/{name}/stow", body)
        except orthanc.OrthancException as exc:
            return answer_orthanc_exception(output, uri, "POST", exc)
        return output.AnswerBuffer(answer, "application/json")
    try:
        stow = read_stow_request(body)
        instances = [i for resource in stow.resources for i in instances_of(resource)]
        job, run = plan_stow_send(name, transaction, instances, list(stow.resources), ruleset, stow.http_headers)
    except OrthancError as error:
        return answer_error(output, "POST", uri, error)
    except LookupError:
        return orthanc_error(output, uri, "POST", "UnknownResource", "no such resource in Orthanc")
    except ValueError as exc:
        return orthanc_error(output, uri, "POST", "BadFileFormat", str(exc))
    log_event("send", route=f"dicom-web/servers/{name}/stow", outcome="started", job=job.id, server=name,
              instances=len(instances), synchronous=stow.synchronous)
    return answer_send(output, uri, job, run, stow.synchronous)


def dicomweb_transaction(name: str, ruleset: RuleSet) -> Transaction:
    return _transaction(DICOMWEB, name, dicomweb_servers(), ruleset)


def plan_stow_send(name: str, transaction: Transaction, instances: list[str], resources: list[str],
                   ruleset: RuleSet, headers: dict | None = None):
    """A coerced send job to the DICOMweb server ``name`` and the function that runs it. Raises
    OrthancError when the server is not in DicomWeb.Servers (its credentials are read there),
    ValueError when its entry is malformed."""
    servers = (state.config.get("DicomWeb") or {}).get("Servers") or {}
    server = configured_server(servers, name) or configured_server(servers, transaction.target or "")
    if server is None:
        raise OrthancError.of("UnknownResource", f"coercion rules apply to DICOMweb server {name!r}, which is not "
                              "in DicomWeb.Servers of the configuration: coerced sends read its URL and "
                              "credentials there (a server added at run time cannot be used)")
    job = state.sends.add(SendJob(name, "", transaction.calling_aet, instances, resources, False, way_out=DICOMWEB))
    return job, job_runner(job, transaction, ruleset, lambda folder: StowSender(server, folder, headers),
                           "STOW-RS", f"dicomweb:{name}", server=name)


# -- POST {DicomWeb.Root}servers/{id}/stow: refused for a server a rule names --------------------

def dicomweb_servers() -> dict:
    """The DICOMweb plugin's servers as it knows them now ({} without the plugin)."""
    try:
        known = json.loads(orthanc.RestApiGetAfterPlugins(state.dicomweb_root + "servers?expand"))
    except (orthanc.OrthancException, ValueError):
        return {}
    return known if isinstance(known, dict) else {name: {} for name in known if isinstance(name, str)}


def stow_refusal(uri: str, method: str) -> str | None:
    """Why the DICOMweb plugin's STOW-RS client must not send (a server a rule names: it would
    send originals), or None. ``uri`` as the HTTP filter sees it (decoded, no query string)."""
    if method != "POST" or state.stow_route is None:
        return None
    found = state.stow_route.fullmatch(uri.rstrip("/"))
    if found is None:
        return None
    ruleset = state.service.ruleset
    transaction = _transaction(DICOMWEB, found.group(1), dicomweb_servers(), ruleset)
    if not ruleset.may_match(transaction):
        return None
    return (f"coercion rules apply to DICOMweb server {found.group(1)!r}: the DICOMweb plugin would send "
            f"originals; POST the same body to /coercion/dicom-web/servers/{found.group(1)}/stow for coerced copies")


def dicomweb_root(config: dict) -> str:
    """DicomWeb.Root as the DICOMweb plugin reads it (GetRootPath: a slash added at either end
    where it is missing; "" is "/")."""
    root = (config.get("DicomWeb") or {}).get("Root", "/dicom-web/")
    root = str(root if root is not None else "/dicom-web/")
    root = root if root.startswith("/") else "/" + root
    return root if root.endswith("/") else root + "/"


def stow_route(root: str) -> re.Pattern:
    """The DICOMweb plugin's STOW-RS client route, a regular expression as the plugin registers
    it (its root is not escaped there either: the same requests match)."""
    return re.compile(root + r"servers/([^/]*)/stow")


# -- POST /jobs/{id}/resubmit and /resume: an Orthanc send whose receiver a rule names now ------

_JOB_ROUTE = re.compile(r"/jobs/([^/]+)/(resubmit|resume)")


def job_refusal(uri: str, method: str) -> str | None:
    """Why a job of Orthanc's own that sends to a receiver a rule names now must not run again
    (it was made before the rule, or by Orthanc's own route): it would send originals."""
    found = _JOB_ROUTE.fullmatch(uri.rstrip("/")) if method == "POST" else None
    if found is None or not state.outgoing_registered:
        return None
    try:
        job = json.loads(orthanc.RestApiGet(f"/jobs/{found.group(1)}"))
    except (orthanc.OrthancException, ValueError):
        return None  # no such job: Orthanc answers as it does
    kind, content, ruleset = job.get("Type"), job.get("Content") or {}, state.service.ruleset
    if kind == "DicomModalityStore":
        aet = str(content.get("RemoteAet", ""))
        known = [m for m in modalities().values() if state.service.peers.same(m.get("AET", ""), aet)]
        transactions = [outgoing_transaction(m, content.get("LocalAet")) for m in known] or \
            [Transaction("C_STORE_RQ", "SCP", content.get("LocalAet") or state.orthanc_aet, aet)]
    elif kind == "OrthancPeerStore":
        peer = content.get("Peer")
        url = peer.get("Url") if isinstance(peer, dict) else peer[0] if isinstance(peer, list) and peer else None
        known = peers()
        names = [n for n, e in known.items() if isinstance(e, dict) and _url_key(e.get("Url")) == _url_key(url)]
        transactions = [_transaction(PEER, n, known, ruleset) for n in names] or \
            [Transaction("C_STORE_RQ", "SCP", state.orthanc_aet, exit=PEER, target=None)]
    elif kind == "DicomWebStowClient":
        server = content.get("Server")  # DICOMweb 1.20 and later; before, any server a rule may name
        transactions = [dicomweb_transaction(server, ruleset)] if isinstance(server, str) else \
            [Transaction("C_STORE_RQ", "SCP", state.orthanc_aet, exit=DICOMWEB, target=None)]
        if not isinstance(server, str) and any(r.receiving_dicomweb_server.entries or not r.names_other_exits(DICOMWEB)
                                               for r in ruleset.rules if r.dimse == "C_STORE_RQ" and r.role == "SCP"):
            return f"job {found.group(1)} ({kind}): its server cannot be told, and rules apply to DICOMweb servers"
    else:
        return None
    if any(ruleset.may_match(t) for t in transactions):
        return (f"job {found.group(1)} ({kind}) would send originals to a receiver coercion rules apply to now; "
                "send again through the route, which coerces")
    return None
