# Shared set-up steps, sourced by install-and-serve.sh and test.sh.
# Builds everything from a clean clone: Debian packages, then a virtual environment made
# with Debian's /usr/bin/python3.11 (the interpreter Orthanc's Python plugin embeds).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${COERCION_VENV:-$REPO/.venv}"
DEBIAN_PACKAGES="python3.11 python3.11-venv orthanc orthanc-python orthanc-dicomweb dcmtk"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

install_debian_packages() {
    local missing=()
    for pkg in $DEBIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        # policy-rc.d keeps the packaged Orthanc service (ports 8042/4242) from starting:
        # our Orthanc is a process of our own, on the ports orthanc.json names.
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d' || true
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

build_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        /usr/bin/python3.11 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO$extras"
}
