#!/bin/sh
# Installs the coercion package beside an Orthanc that has its Python plugin: the steps of
# docker/Dockerfile (on the orthancteam/orthanc image), in one script that CI also runs in a
# Debian testing chroot, the nearest thing to that image the project's machine can run
# (tests/test_platforms.py).
#   sh docker/install.sh [SOURCE]      (SOURCE: the project's folder; default /opt/coercion/src)
# The virtual environment (COERCION_VENV, default /opt/coercion/venv) is made with the Python
# the plugin's library links (read with ldd, never assumed), so that Orthanc can load it.
set -eu
SOURCE="${1:-/opt/coercion/src}"
VENV="${COERCION_VENV:-/opt/coercion/venv}"

plugin=""
for candidate in /usr/share/orthanc/plugins-available/libOrthancPython.so \
                 /usr/share/orthanc/plugins/libOrthancPython.so \
                 /usr/local/share/orthanc/plugins/libOrthancPython.so; do
    if [ -e "$candidate" ]; then plugin="$candidate"; break; fi
done
if [ -z "$plugin" ]; then
    echo "install.sh: Orthanc's Python plugin (libOrthancPython.so) is not installed" >&2
    exit 1
fi
python=$(ldd "$plugin" | grep -o 'libpython3\.[0-9][0-9]*' | head -n 1 | sed 's/^lib//')
if [ -z "$python" ]; then
    echo "install.sh: $plugin links no libpython3.X" >&2
    exit 1
fi
echo "install.sh: Orthanc's Python plugin embeds $python"
# dcmtk's storescu sends coerced instances; Clean Pixel Data needs Tesseract with its English
# data, what tesserocr is built with against it, and libturbojpeg (PIXEL_DEBIAN_PACKAGES in
# plugin/scripts/common.sh); the image has no compiler.
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "$python" "$python-venv" "$python-dev" ca-certificates dcmtk \
    tesseract-ocr tesseract-ocr-eng libtesseract-dev libleptonica-dev pkg-config g++ libturbojpeg0
"/usr/bin/$python" -m venv "$VENV"
# Editable: Orthanc runs plugin/orthanc_entry.py from the source. tesserocr from source,
# against this Tesseract (PyPI's wheels bundle their own, without its language data).
PIP_NO_BINARY=tesserocr "$VENV/bin/pip" install -q --no-cache-dir -e "$SOURCE"
"$VENV/bin/python" -c "import coercion, tesserocr; print('install.sh: coercion', coercion.__version__, 'in', '$VENV')"
