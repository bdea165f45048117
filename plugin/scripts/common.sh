# Shared set-up steps, sourced by install-and-serve.sh and test.sh.
# Builds everything from a clean clone: Debian packages, then a virtual environment made with
# the Python that Debian's orthanc-python embeds (read from its dependencies: python3.11 on
# Debian 12, 3.13 on Debian 13, 3.14 on testing), never a version written here.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${COERCION_VENV:-$REPO/.venv}"
# Clean Pixel Data: Tesseract (with its English data) for tesserocr, which is built against it
# (a compiler, pkg-config and the headers), and libturbojpeg for masking JPEG in the DCT domain.
PIXEL_DEBIAN_PACKAGES="tesseract-ocr tesseract-ocr-eng libtesseract-dev libleptonica-dev pkg-config g++ libturbojpeg0"
DEBIAN_PACKAGES="orthanc orthanc-python orthanc-dicomweb dcmtk ca-certificates $PIXEL_DEBIAN_PACKAGES"
# Needed by the tests only: dciodvfy, the validator tests/test_valid_output.py runs; the fonts
# tests/pixelimages.py renders burned-in text with; PostgreSQL, whose initdb makes the
# throw-away servers of tests/pgcluster.py (its system service is not started: see below), and
# Orthanc's PostgreSQL index for the two-node tests (tests/integration/test_cluster.py);
# Chromium and its ChromeDriver for the page's browser tests (tests/integration/test_admin_page.py);
# debootstrap for the chroots of the newer Debian releases (tests/test_platforms.py).
TEST_DEBIAN_PACKAGES="debootstrap dicom3tools fonts-dejavu-core fonts-urw-base35 postgresql orthanc-postgresql chromium chromium-driver"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

install_debian_packages() {  # [packages]: default DEBIAN_PACKAGES
    local missing=()
    for pkg in ${1:-$DEBIAN_PACKAGES}; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        # Debian's orthanc package brings a system service on ports 8042/4242, the ports our
        # own Orthanc (a process of ours, with our orthanc.json) uses too; postgresql one on
        # 5432 (the tests start servers of their own). A policy-rc.d for the length of the
        # install keeps them from starting; where systemd runs, a service that this install
        # brought is then disabled, so that it does not start at the next boot.
        local brought=() had_policy=no
        for service in orthanc postgresql; do
            if printf '%s\n' "${missing[@]}" | grep -qx "$service"; then brought+=("$service"); fi
        done
        [ -e /usr/sbin/policy-rc.d ] && had_policy=yes
        if [ "$had_policy" = no ]; then
            as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
        fi
        local status=0
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" || status=$?
        [ "$had_policy" = no ] && as_root rm -f /usr/sbin/policy-rc.d
        [ "$status" -eq 0 ] || return "$status"
        if [ ${#brought[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
            echo "disabling the system services this install brought (${brought[*]}); this project runs its own"
            as_root systemctl disable --now "${brought[@]}" >/dev/null 2>&1 || true
        fi
    fi
}

orthanc_python() {  # prints "3.X": the libpython3.X that the installed orthanc-python links
    local version
    version=$(dpkg-query -W -f='${Depends}' orthanc-python 2>/dev/null | grep -o 'libpython3\.[0-9][0-9]*' | head -n1)
    if [ -z "$version" ]; then
        echo "cannot tell which Python Debian's orthanc-python embeds (no libpython3.X in its dependencies)" >&2
        return 1
    fi
    echo "${version#libpython}"
}

install_python() {  # the interpreter Orthanc embeds, with venv and headers (for what builds from source)
    local version
    version=$(orthanc_python)
    install_debian_packages "python$version python$version-venv python$version-dev"
    PYTHON="/usr/bin/python$version"
}

build_venv() {
    local extras="$1"
    install_python
    # A venv of another Python (the machine moved to a newer Debian) cannot be loaded by Orthanc.
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, sys.argv[1].split("."))))' "${PYTHON#/usr/bin/python}"; then
        echo "the virtual environment $VENV is not of ${PYTHON#/usr/bin/}: making it anew"
        rm -rf -- "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # tesserocr is built from source against Debian's Tesseract: PyPI's wheels bundle a
    # Tesseract of their own, without its language data.
    PIP_NO_BINARY=tesserocr "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO$extras"
}
