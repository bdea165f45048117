#!/usr/bin/env bash
# Install everything on a fresh Debian/Ubuntu machine and start Orthanc with the plugin and
# the example rules, in the foreground (Ctrl-C stops it). Arguments go to `coercion serve`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

install_debian_packages
build_venv ""
mkdir -p "$REPO/var"
if [ -z "${COERCION_SECRET:-}" ] && [ -z "${COERCION_SECRET_FILE:-}" ] && [ ! -s "$REPO/var/site.key" ]; then
    echo "creating a site secret in var/site.key (back it up: it keys every pseudonym)"
    (umask 077; head -c 48 /dev/urandom > "$REPO/var/site.key")
fi
if [ ! -s "$REPO/var/linkage.token" ]; then
    # The credential for GET /coercion/linkage/{pseudonym}; give it only to who may re-identify.
    (umask 077; "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$REPO/var/linkage.token")
fi
export TCP_NODELAY=1
exec "$VENV/bin/coercion" serve --config "$REPO/orthanc.json" "$@"
