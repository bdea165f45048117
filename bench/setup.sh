#!/usr/bin/env bash
# The benchmarks' own environment, under the interpreter Orthanc's Python plugin embeds (read
# from Debian's package, as the set-up scripts read it). The peer tools are installed here
# only, never as dependencies of the project.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$BENCH")"
source "$REPO/plugin/scripts/common.sh"
PYTHON="/usr/bin/python$(orthanc_python)"
[ -x "$BENCH/.venv/bin/python" ] || "$PYTHON" -m venv "$BENCH/.venv"
"$BENCH/.venv/bin/python" -m pip install -q --disable-pip-version-check \
    -e "$REPO" "dicognito==0.19.*" "dicom-anonymizer==2.1.*" "deid==0.4.13" "pynetdicom>=3,<4" requests
