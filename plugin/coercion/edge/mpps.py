"""The MPPS SCP: pynetdicom inside Orthanc's process, on a port of its own.

``start_mpps`` (called at the end of start-up) runs it when orthanc.json sets
``"Coercion": {"Mpps": {"Port": N}}`` (``"Aet"``: Orthanc's DicomAet by default; ``"Host"``:
where to listen, 127.0.0.1 by default). It accepts associations only from the peers Orthanc's
DicomModalities list (by AE title, and by host with DicomCheckModalityHost, as Orthanc's own
C-STORE SCP does with DicomAlwaysAllowStore false), answers N-CREATE and N-SET of Modality
Performed Procedure Step and C-ECHO, and hands each message to ``exchanges.mpps``. A connection
becomes an association only once its A-ASSOCIATE-RQ has arrived (``_MppsServer``: idle sockets
are dropped after ``"RequestTimeout"`` seconds, and hold no slot meanwhile), and a host holds at
most ``"MaxAssociationsPerHost"`` of the ``"MaxAssociations"``. Its threads are pynetdicom's (one
listening, two per association), and one per connection waiting for its request; when Orthanc
finalizes the interpreter, a handler run before Python waits for its threads (pynetdicom's
association threads are not daemon threads) aborts the associations, drops the connections
waiting and closes the port, so that Orthanc stops promptly.
``send_mpps_forward`` is the forwarding worker's sender for MPPS forwards (pynetdicom as an
SCU); ``mpps_route`` answers /coercion/mpps.
"""

from __future__ import annotations

import atexit
import logging
import select
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import orthanc
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import N_CREATE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from ..configuration import MppsSettings
from ..exchanges.mpps import (
    MAX_ATTRIBUTE_LIST_BYTES,
    MPPS_SOP_CLASS,
    PROCESSING_FAILURE,
    VERIFICATION_SOP_CLASS,
    Answer,
    Message,
    MppsExchange,
    Outgoing,
    admitted,
    find_modality,
    performed_series,
)
from ..service import safe_message
from ..stores.locations import is_url
from ..stores.mpps import open_mpps_store
from .state import audit, forward_wakeup, log_failure, modalities, state, stop_orthanc

# pynetdicom logs datasets and identifiers at its "standard" level: none of it here (the data
# is PHI until a rule coerces it); the plugin writes its own audit lines.
_config.LOG_HANDLER_LEVEL = "none"
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
_pynetdicom_log = logging.getLogger("pynetdicom")
_pynetdicom_log.addHandler(logging.NullHandler())
_pynetdicom_log.propagate = False
_pynetdicom_log.setLevel(logging.CRITICAL + 1)

_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]  # no deflate: bounded
# A message whose PDUs pass this is cut off at the transport (the bound checked after it is
# received is MAX_ATTRIBUTE_LIST_BYTES, answered with Resource Limitation).
_MAX_MESSAGE_BYTES = 4 * MAX_ATTRIBUTE_LIST_BYTES
# An A-ASSOCIATE-RQ is read only once it is whole; a larger one is refused unread (one proposing
# 128 presentation contexts of three transfer syntaxes each is about 15 KB).
_MAX_REQUEST_BYTES = 64 * 1024
# Connections waiting for their A-ASSOCIATE-RQ, a thread each; beyond, the oldest of the host
# with the most waiting is dropped.
_MAX_WAITING = 64
_PDU_HEADER = 6  # PDU type, reserved, length (PS3.8 9.3.1)
_A_ASSOCIATE_RQ = 0x01


_running: dict = {}  # "ae", "server", "settings" while the SCP runs


def start_mpps(config: dict) -> None:
    """Start the MPPS SCP if the configuration asks for it; bad settings stop Orthanc."""
    try:
        settings = MppsSettings.from_configuration(config)
    except ValueError as exc:
        stop_orthanc(str(exc))
        return
    service = state.service
    database = service.settings.mpps_database  # a path or a URL: never made a Path before it is known
    if settings is None:
        if any(r.dimse in ("N_CREATE_RQ", "N_SET_RQ") for r in service.ruleset.rules + service.ruleset.routes):
            orthanc.LogWarning("coercion: rules for N_CREATE_RQ or N_SET_RQ apply to nothing: no MPPS SCP runs "
                               '(set "Coercion": {"Mpps": {"Port": ...}})')
        if not is_url(database) and not Path(database).exists():
            return  # nothing kept to show
    try:
        state.mpps = open_mpps_store(database, service.keys, service.settings.database_password_file)
    except Exception as exc:  # StoreError: a wrong secret, an altered or unwritable file
        stop_orthanc(f"the MPPS store cannot be opened: {safe_message(exc)}")
        return
    state.mpps_exchange = MppsExchange(service, state.mpps, arm=_arm, resolve=_resolve,
                                       worklists=lambda: state.worklists, audit=_audit, warn=_warn)
    queued = state.mpps_exchange.queue_unqueued()
    if settings is None:
        return
    try:
        _serve(settings)
    except OSError as exc:
        stop_orthanc(f"the MPPS SCP cannot listen on {settings.host}:{settings.port} (Coercion.Mpps): "
                      f"{exc.strerror or exc}; is the port taken? choose another with Coercion.Mpps.Port")
        return
    _at_exit(stop_mpps)
    orthanc.LogWarning(f"coercion: MPPS SCP {settings.aet} on {settings.host}:{settings.port}"
                       + (f" ({queued} forward(s) queued again)" if queued else ""))


def _serve(settings: MppsSettings) -> None:
    ae = AE(ae_title=settings.aet)
    ae.require_called_aet = settings.check_called_aet
    ae.maximum_associations = settings.max_associations  # _on_requested refuses first, and audits
    ae.network_timeout = settings.scp_timeout
    ae.acse_timeout = ae.dimse_timeout = 30
    ae.add_supported_context(MPPS_SOP_CLASS, _TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION_SOP_CLASS, _TRANSFER_SYNTAXES)
    handlers = [(evt.EVT_REQUESTED, _on_requested), (evt.EVT_N_CREATE, _on_n_create), (evt.EVT_N_SET, _on_n_set),
                (evt.EVT_C_ECHO, _on_echo), (evt.EVT_PDU_RECV, _on_pdu), (evt.EVT_DIMSE_RECV, _on_message)]
    _running["settings"] = settings  # before the first association is requested
    try:
        # As ae.start_server(block=False) does, with the server that waits for the A-ASSOCIATE-RQ
        server = ae.make_server((settings.host, settings.port), evt_handlers=handlers, server_class=_MppsServer,
                                request_timeout=settings.request_timeout)
    except BaseException:
        _running.clear()
        raise
    ae._servers.append(server)  # ae.shutdown() shuts it down, as a server start_server made
    _running.update(ae=ae, server=server)
    threading.Thread(target=server.serve_forever, name="coercion-mpps-server", daemon=True).start()


class _MppsServer(ThreadedAssociationServer):
    """pynetdicom's server, but a connection takes an association slot (pynetdicom's Association
    and its two threads, which maximum_associations counts) only once its A-ASSOCIATE-RQ has
    arrived whole. Until then it waits, unread, in a thread of its own (``_WaitingHandler``),
    ``request_timeout`` seconds at most; pynetdicom would wait 30 s (its ACSE timeout) with the
    slot taken, so that a few idle sockets would shut every modality out. At most _MAX_WAITING
    connections wait: beyond, the oldest of the host with the most waiting is dropped (a host
    opening connections crowds out its own, not the others')."""

    request_queue_size = 64  # the listen backlog: bursts of connections are accepted, then judged

    def __init__(self, ae, address, ae_title, contexts, ssl_context=None, evt_handlers=None, *,
                 request_timeout: float):
        self.request_timeout = request_timeout
        self._waiting: dict[socket.socket, tuple[str, float]] = {}  # connection -> (host, since)
        self._waiting_lock = threading.Lock()
        self._closing = False
        super().__init__(ae, address, ae_title, contexts, ssl_context, evt_handlers,
                         request_handler=_WaitingHandler)

    def server_bind(self) -> None:
        # Accepted connections inherit the buffer: a whole A-ASSOCIATE-RQ must fit before it is read.
        if self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < 4 * _MAX_REQUEST_BYTES:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * _MAX_REQUEST_BYTES)
        super().server_bind()

    def verify_request(self, request, client_address) -> bool:
        """In the listening thread, for each connection accepted: wait for its request, making room."""
        if self._closing:
            return False
        host, dropped = str(client_address[0]), None
        with self._waiting_lock:
            if len(self._waiting) >= _MAX_WAITING:
                crowded = Counter(h for h, _ in self._waiting.values()).most_common(1)[0][0]
                dropped = min((s for s, (h, _) in self._waiting.items() if h == crowded),
                              key=lambda s: self._waiting[s][1])
                del self._waiting[dropped]
            self._waiting[request] = (host, time.monotonic())
        if dropped is not None:
            _wake(dropped)  # its thread finds it closed, closes it and ends
            _audit({"event": "mpps-connection", "host": crowded,
                    "outcome": f"refused: dropped before its A-ASSOCIATE-RQ, {_MAX_WAITING} connections waiting"})
        return True

    def process_request(self, request, client_address) -> None:
        try:
            super().process_request(request, client_address)  # a thread for it (_WaitingHandler)
        except BaseException:
            self.done_waiting(request)
            raise

    def done_waiting(self, request) -> bool:
        """The connection stops waiting; False when it was dropped meanwhile."""
        with self._waiting_lock:
            return self._waiting.pop(request, None) is not None

    def shutdown(self) -> None:
        self._closing = True
        with self._waiting_lock:
            waiting = list(self._waiting)
        for request in waiting:  # server_close joins their threads: wake them now
            _wake(request)
        super().shutdown()


class _WaitingHandler(RequestHandler):
    """Hands a connection to pynetdicom once its whole A-ASSOCIATE-RQ waits in the receive
    buffer; drops it when none comes in time, or something else does."""

    server: _MppsServer

    def handle(self) -> None:
        sock, host = self.request, str(self.client_address[0])
        try:
            why = _await_request(sock, self.server.request_timeout)
        except OSError:
            why = "closed"
        if not self.server.done_waiting(sock) and not why:
            why = "closed"  # dropped for another while its request arrived
        if why:
            if why != "closed":  # a port probe's connect and close is no event
                _audit({"event": "mpps-connection", "host": host, "outcome": f"refused: {why}"})
            _shut(sock)
            return
        # A PDU that stops half-way no longer holds the association's reader for ever: pynetdicom
        # treats a timed out read as the connection closed.
        sock.settimeout(self.ae.network_timeout)
        super().handle()


def _await_request(sock: socket.socket, timeout: float) -> str:
    """'' once a whole A-ASSOCIATE-RQ is in the connection's receive buffer (only peeked at:
    pynetdicom reads it), else why the connection is dropped."""
    deadline = time.monotonic() + timeout
    needed, seen = _PDU_HEADER, 0
    poller = select.poll()  # not select(): Orthanc may hold more than 1024 descriptors
    poller.register(sock, select.POLLIN)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                return f"no A-ASSOCIATE-RQ within {timeout:g} s"
            try:
                data = sock.recv(needed, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:  # woken without data after all
                time.sleep(0.05)
                continue
            if not data:
                return "closed"
            if len(data) >= _PDU_HEADER:
                kind, _, length = struct.unpack(">BBL", data[:_PDU_HEADER])
                if kind != _A_ASSOCIATE_RQ:
                    return "not an A-ASSOCIATE-RQ"
                if length > _MAX_REQUEST_BYTES:
                    return f"an A-ASSOCIATE-RQ of more than {_MAX_REQUEST_BYTES} bytes"
                needed = _PDU_HEADER + length
            if len(data) >= needed:
                return ""
            if len(data) == seen:  # readable without more data: the low-water mark is not honoured
                time.sleep(0.05)
            seen = len(data)
            _low_water(sock, needed)  # select wakes when that much is there, not at each byte
    finally:
        _low_water(sock, 1)


def _low_water(sock: socket.socket, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
    except (OSError, AttributeError):
        pass


def _wake(sock: socket.socket) -> None:
    """End a connection another thread waits on: select() there wakes and reads its end (the
    waiting thread closes it: closing its descriptor under it would not wake it, and the
    number could be reused meanwhile)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _shut(sock: socket.socket) -> None:
    _wake(sock)
    sock.close()


def _at_exit(stop) -> None:
    """Run ``stop`` when the interpreter finalizes, before it joins the threads that are not
    daemon threads (atexit handlers run after that join: too late)."""
    try:
        threading._register_atexit(stop)  # Python 3.9+, as concurrent.futures does
    except (AttributeError, RuntimeError):
        atexit.register(stop)


_peers: set = set()  # the associations forwards have open


def stop_mpps() -> None:
    """Stop listening, abort the associations in progress, free the port (at interpreter exit)."""
    ae = _running.pop("ae", None)
    if ae is not None:
        ae.shutdown()
    for peer in list(_peers):
        peer.abort()
    _running.clear()


def _no_delay(assoc) -> None:
    """Each message is written in several PDUs (command, then data set): without TCP_NODELAY
    the second waits for the peer's delayed acknowledgement, about 40 ms a message."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


# -- the associations ---------------------------------------------------------------------


def _on_requested(event) -> None:
    """A-ASSOCIATE-RQ: refused (local limit exceeded) beyond the associations a host, or all
    callers, may hold; refused (calling AE title not recognized) unless DicomModalities list
    the peer, by AE title and, with DicomCheckModalityHost, by host."""
    assoc = event.assoc
    _no_delay(assoc)
    _quick_ack(assoc)
    calling = str(assoc.requestor.primitive.calling_ae_title or "").strip()
    host = assoc.requestor.address
    settings = _running.get("settings")
    full = _full(assoc, host, settings)
    if full:
        _audit({"event": "mpps-association", "calling_aet": calling, "host": host, "outcome": f"refused: {full}"})
        assoc.acse.send_reject(0x02, 0x03, 0x02)  # rejected-transient, service provider, local limit exceeded
        assoc.kill()
        return
    try:
        known = settings is not None and admitted(calling, host, modalities(), settings.check_host,
                                                  settings.strict_aet)
    except Exception:
        log_failure("MPPS SCP: DicomModalities could not be read")
        known = False
    if known:
        return
    _audit({"event": "mpps-association", "calling_aet": calling, "host": host,
            "outcome": "refused: not in DicomModalities"})
    assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected-permanent, service user, calling AE title not recognized
    assoc.kill()


def _full(assoc, host: str, settings: MppsSettings | None) -> str:
    """Why the association would take more than its share of slots ('' if it would not). The
    associations counted are those whose A-ASSOCIATE-RQ has arrived (_MppsServer), being
    negotiated too: two requests at once see each other, so neither slips past a limit."""
    if settings is None:
        return ""
    others = [a for a in assoc.ae.active_associations if a.is_acceptor and a is not assoc]
    if len(others) >= settings.max_associations:
        return f"{len(others)} associations open, the most accepted (Coercion.Mpps.MaxAssociations)"
    from_host = sum(1 for a in others if a.requestor.address == host)
    if from_host >= settings.max_per_host:
        return (f"{from_host} associations open from this host, the most accepted "
                "(Coercion.Mpps.MaxAssociationsPerHost)")
    return ""


def _quick_ack(assoc) -> None:
    """Acknowledge at once what the peer sends: a peer writing a message in two PDUs without
    TCP_NODELAY holds the second until the first is acknowledged, and Linux delays that
    acknowledgement by up to 40 ms (TCP_QUICKACK lasts a while only: set again per PDU)."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass


def _on_pdu(event) -> None:
    """Count the bytes of the message being received; cut the transport beyond the bound."""
    _quick_ack(event.assoc)
    if isinstance(event.pdu, P_DATA_TF):
        assoc = event.assoc
        received = getattr(assoc, "_coercion_bytes", 0) + len(event.pdu)
        assoc._coercion_bytes = received
        if received > _MAX_MESSAGE_BYTES:
            _audit({"event": "mpps-association", "calling_aet": str(assoc.requestor.ae_title).strip(),
                    "outcome": f"aborted: a message of more than {_MAX_MESSAGE_BYTES} bytes"})
            assoc.dul.socket.close()


def _on_message(event) -> None:
    event.assoc._coercion_bytes = 0


def _on_echo(event) -> int:
    return 0x0000


def _message(event) -> Message:
    request = event.request
    syntax = event.context.transfer_syntax
    if isinstance(request, N_CREATE):
        data, uid, sop_class = request.AttributeList, request.AffectedSOPInstanceUID, request.AffectedSOPClassUID
    else:
        data, uid, sop_class = request.ModificationList, request.RequestedSOPInstanceUID, request.RequestedSOPClassUID
    called = event.assoc.requestor.primitive.called_ae_title or event.assoc.acceptor.ae_title
    return Message(str(event.assoc.requestor.ae_title).strip(), str(called).strip(),
                   event.assoc.requestor.address, str(sop_class) if sop_class else None, str(uid) if uid else None,
                   data.getvalue() if data is not None else b"", syntax.is_implicit_VR, syntax.is_little_endian)


def _status(answer: Answer, tags: bool = True) -> Dataset:
    """The status of a response; ``tags``: with the Attribute Identifier List (an N-CREATE
    response has none in pynetdicom: its Error Comment names the attributes)."""
    status = Dataset()
    for keyword, value in answer.status_fields().items():
        if tags or keyword != "AttributeIdentifierList":
            setattr(status, keyword, value)
    return status


def _on_n_create(event):
    try:
        answer = state.mpps_exchange.n_create(_message(event))
    except Exception:
        log_failure("MPPS N-CREATE")
        answer = Answer(PROCESSING_FAILURE, "the step could not be kept")
    attributes = None
    if answer.ok and answer.created_uid:  # the SCU let the SCP choose the UID: the response says it
        attributes = Dataset()
        attributes.AffectedSOPInstanceUID = answer.created_uid
    return _status(answer, tags=False), attributes


def _on_n_set(event):
    try:
        answer = state.mpps_exchange.n_set(_message(event))
    except Exception:
        log_failure("MPPS N-SET")
        answer = Answer(PROCESSING_FAILURE, "the step could not be kept")
    return _status(answer), None


def _audit(fields: dict) -> None:
    fields = dict(fields)
    audit(fields.pop("event"), refused=str(fields.get("outcome", "")).startswith(("refused", "aborted")), **fields)


def _warn(text: str) -> None:
    orthanc.LogWarning(f"coercion: {text}")


# -- forwards -----------------------------------------------------------------------------


def _arm(route: str, destination: str, uid: str, retries: int, retry_interval: int) -> None:
    """Queue a forward of the step (one open per route, destination and step: a message kept
    while one is being sent opens the next, which a failed attempt is merged into)."""
    state.forwards.arm(route, destination, "MPPS", uid, True, retries, retry_interval)
    forward_wakeup.set()  # the worker runs: MPPS forwards come from routes, loaded at start-up


def _resolve(destination: str) -> str:
    """A forward's destination by its name in DicomModalities (as given when unknown)."""
    found = find_modality(modalities(), destination, _strict())
    return found[0] if found else destination


def _strict() -> bool:
    """StrictAetComparison, as the service compares AE titles."""
    return state.service.peers.strict


class _Peer:
    """One association to a forward's destination, opened at the first message sent."""

    def __init__(self, peer: dict, calling_aet: str, timeout: int):
        self.peer, self.calling_aet, self.timeout = peer, calling_aet, timeout
        self.assoc = None

    def send(self, outgoing: Outgoing) -> int:
        if self.assoc is None:
            ae = AE(ae_title=self.calling_aet)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
            ae.add_requested_context(MPPS_SOP_CLASS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            assoc = ae.associate(str(self.peer.get("Host")), int(self.peer.get("Port")),
                                 ae_title=str(self.peer.get("AET")))
            if not assoc.is_established:
                raise ConnectionError("the association was not accepted" if assoc.is_rejected else
                                      "the peer could not be reached")
            _no_delay(assoc)
            self.assoc = assoc
            _peers.add(self)
        if outgoing.kind == "N-CREATE":
            status, _ = self.assoc.send_n_create(outgoing.dataset, MPPS_SOP_CLASS, outgoing.uid)
        else:
            status, _ = self.assoc.send_n_set(outgoing.dataset, MPPS_SOP_CLASS, outgoing.uid)
        if "Status" not in status:
            self.close()
            raise ConnectionError("no answer from the peer")
        return int(status.Status)

    def close(self) -> None:
        assoc, self.assoc = self.assoc, None
        _peers.discard(self)
        if assoc is not None and assoc.is_established:
            assoc.release()

    def abort(self) -> None:
        assoc, self.assoc = self.assoc, None
        _peers.discard(self)
        if assoc is not None and assoc.is_established:
            assoc.abort()


def send_mpps_forward(row: dict) -> str:
    """The forwarding worker's sender for a forward of level MPPS: the step's messages the
    destination has not had, in order, over one association; the row is sent, or an attempt
    failed (and is retried with the queue's back-off). Its state afterwards."""
    forwards = state.forwards
    try:
        exchange = state.mpps_exchange
        if exchange is None:
            return _failed(row, "the MPPS store is not open (Coercion.Mpps)", retry=False)
        found = find_modality(modalities(), row["destination"], _strict())
        if found is None:
            return _failed(row, f"no modality named {row['destination']!r} in DicomModalities")
        name, peer = found
        settings = _running.get("settings")
        calling = peer.get("LocalAet") or (settings.aet if settings else state.orthanc_aet)
        link = _Peer(peer, calling, settings.timeout if settings else state.scu_timeout)
        try:
            result = exchange.forward(row["resource"], row["destination"], peer, calling, link.send)
        finally:
            link.close()
    except Exception as exc:
        log_failure("MPPS forward")
        return _failed(row, f"{type(exc).__name__}: {safe_message(exc)}")
    _audit({"event": "mpps-forward", "destination": row["destination"], "sop_instance_uid": row["resource"],
            "messages_sent": result.sent, "outcome": "sent" if result.ok else f"attempt failed: {result.reason}"})
    if result.ok:
        forwards.sent(row["id"])
        return "sent"
    now = _failed(row, result.reason, result.retry)
    orthanc.LogWarning(f"coercion: forward {row['id']} (MPPS) to {name}: attempt failed, now {now}")
    return now


def _failed(row: dict, reason: str, retry: bool = True) -> str:
    return state.forwards.attempt_failed(row["id"], reason, retry=retry)


# -- REST ---------------------------------------------------------------------------------


def mpps_route(route: str, args: dict) -> tuple[int, object]:
    """(status, JSON-able answer) of GET /coercion/mpps[/{uid}] (the caller holds the
    administration credential: the kept dataset is PHI unless a rule coerced it)."""
    if state.mpps is None:
        return 404, {"error": 'no MPPS SCP is configured: set "Coercion": {"Mpps": {"Port": ...}}', "status": 404}
    if route == "mpps":
        status = args.get("status") or None
        try:
            limit = min(max(int(args.get("limit", 500)), 1), 10000)
        except ValueError:
            return 400, {"error": "limit must be a whole number", "status": 400}
        return 200, [step.as_dict() for step in state.mpps.steps(status, limit)]
    uid = route[len("mpps/"):]
    kept = state.mpps.get(uid)
    if kept is None:
        return 404, {"error": f"no MPPS {uid}", "status": 404}
    return 200, {**kept.step.as_dict(), "performed_series": performed_series(kept.dataset),
                 "deliveries": [d.as_dict() for d in state.mpps.deliveries(uid)], "dataset": kept.dataset}

