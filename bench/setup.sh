#!/usr/bin/env bash
# The benchmarks' own environment, under Debian's /usr/bin/python3.11 (the interpreter Orthanc
# embeds). The peer tools are installed here only, never as dependencies of the project.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$BENCH")"
[ -x "$BENCH/.venv/bin/python" ] || /usr/bin/python3.11 -m venv "$BENCH/.venv"
"$BENCH/.venv/bin/python" -m pip install -q --disable-pip-version-check \
    -e "$REPO" "dicognito==0.19.*" "dicom-anonymizer==2.1.*" "deid==0.4.13" "pynetdicom>=3,<4" requests
