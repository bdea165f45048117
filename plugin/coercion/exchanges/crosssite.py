"""Cross-site requests: what a web page of another site can make a browser send to Orthanc.

A browser on the archive's machine holds Orthanc's credential once someone has logged in to
Orthanc Explorer; a page of any other site can then have it POST a form or a ``fetch`` with a
"simple" body, and Orthanc would act on it (a send, a deletion, a new modality). Such a request
is refused when it changes state (POST, PUT, DELETE) and

* its ``Origin`` or ``Referer`` names another host than the one it was sent to (``null``, as
  sandboxed pages and redirects send it, is another host), or the browser says it comes from
  another site (``Sec-Fetch-Site: cross-site`` or ``same-site``), or
* it comes from a browser (``Sec-Fetch-*`` headers, or a ``Mozilla/`` user agent: every
  browser's) with a body of a type an HTML form can send (``application/x-www-form-urlencoded``,
  ``multipart/form-data``, ``text/plain``: no CORS preflight protects them) and nothing shows it
  comes from Orthanc's own pages (no ``Origin`` or ``Referer`` of its own host).

A body of a form's type is not refused from clients that are not browsers: Orthanc's own HTTP
client (peers, ``/peers/{id}/store``) and curl's ``-d`` send ``application/x-www-form-urlencoded``
whatever they send, and no web page can make a browser pass for them. Orthanc Explorer's requests
carry its own Origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

STATE_CHANGING = frozenset({"POST", "PUT", "DELETE"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})


def _host_of(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.rsplit("@", 1)[-1].lower()


def cross_site_refusal(method: str, headers: dict, allowed: tuple[str, ...] = ()) -> str | None:
    """Why a request must be refused as cross-site (None: it may go on). ``headers`` are
    lower-case names, as Orthanc gives them; ``allowed``: other origins whose pages may change
    state (Coercion.AllowedOrigins: a reverse proxy's public name, which Orthanc's Host is not).
    The answer quotes no header value."""
    if method.upper() not in STATE_CHANGING:
        return None
    host = (headers.get("host") or "").strip().lower()
    hosts = {host} | {h for h in map(_host_of, allowed) if h}
    vouched = False
    for name in ("origin", "referer"):
        value = headers.get(name)
        if value is None or value == "":
            continue
        if not host or _host_of(value) not in hosts:
            return (f"a {method.upper()} request whose {name.capitalize()} is another site than this Orthanc: "
                    "state-changing requests from other sites are refused")
        vouched = True
    # An Origin of this Orthanc or of an allowed site vouches for the request; without one, the
    # browser's own word that it comes from elsewhere refuses it.
    if not vouched and (headers.get("sec-fetch-site") or "").strip().lower() in ("cross-site", "same-site"):
        return (f"a {method.upper()} request a browser sent from another site (Sec-Fetch-Site): state-changing "
                "requests from other sites are refused")
    body_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    browser = any(name.startswith("sec-fetch-") for name in headers) or \
        (headers.get("user-agent") or "").startswith("Mozilla/")
    if body_type in FORM_TYPES and browser and not vouched:
        return (f"a {method.upper()} request with a body of type {body_type} (one an HTML form of any site can "
                "send) from a browser, without an Origin of this Orthanc")
    return None
