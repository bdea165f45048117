#!/usr/bin/env bash
# Install everything on a fresh Debian/Ubuntu machine and start Orthanc with the plugin and
# the example rules, in the foreground (Ctrl-C stops it). Arguments go to `coercion serve`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

install_debian_packages
build_venv ""
# var/ holds the secret, the credential, the linkage store and Orthanc's storage: owner-only.
mkdir -p "$REPO/var" && chmod 700 "$REPO/var"
# The worklist folder (orthanc.json's Worklists.Database): the RIS writes .wl items there.
mkdir -p "$REPO/var/worklists" && chmod 700 "$REPO/var/worklists"
# Both files are made anew under umask 077 (0600): an empty file left over keeps its own mode
# if written to, hence the rm.
if [ -z "${COERCION_SECRET:-}" ] && [ -z "${COERCION_SECRET_FILE:-}" ] && [ ! -s "$REPO/var/site.key" ]; then
    echo "creating a site secret in var/site.key (back it up: it keys every pseudonym and seals the linkage store)"
    (umask 077; rm -f "$REPO/var/site.key"; head -c 48 /dev/urandom > "$REPO/var/site.key")
fi
# The credentials: linkage.token for re-identification (give it only to who may re-identify),
# admin.token for previews, rule reloads and send control.
for token in linkage admin; do
    if [ ! -s "$REPO/var/$token.token" ]; then
        (umask 077; rm -f "$REPO/var/$token.token"
         "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$REPO/var/$token.token")
    fi
done
# Orthanc's REST API credential (HTTP Basic, "user:password"): coercion serve gives it to
# Orthanc as its one RegisteredUsers entry. curl -u "$(cat var/rest.credential)" ...
if [ ! -s "$REPO/var/rest.credential" ]; then
    (umask 077; rm -f "$REPO/var/rest.credential"
     "$VENV/bin/python" -c 'import secrets; print("coercion:" + secrets.token_urlsafe(24))' > "$REPO/var/rest.credential")
fi
export TCP_NODELAY=1
exec "$VENV/bin/coercion" serve --config "$REPO/orthanc.json" "$@"
