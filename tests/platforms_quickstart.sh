#!/usr/bin/env bash
# The README's quick start, as a user types it, against the Orthanc the first command started
# on ports $1 (HTTP) and $2 (DICOM); run inside a platform's chroot by tests/test_platforms.py.
# Prints RESULT lines for the test to check.
set -euo pipefail
HTTP="$1" DICOM="$2"
export TCP_NODELAY=1
command -v curl >/dev/null || { apt-get install -y -qq curl >/dev/null; }
REST="$(cat var/rest.credential)"
CT=$(.venv/bin/python -c "from pydicom.data import get_testdata_file as f; print(f('CT_small.dcm'))")
storescu -aet RESEARCH_CT -aec ORTHANC 127.0.0.1 "$DICOM" "$CT"
echo "RESULT patients=$(curl -sf -u "$REST" "http://127.0.0.1:$HTTP/patients?expand" | tr -d '\n')"
curl -sf -u "$REST" "http://127.0.0.1:$HTTP/coercion/stats" >/dev/null

# What Orthanc sends to research-ct leaves de-identified (storescp stands in for it, on the
# port orthanc.json gives the modality).
RECEIVED=$(mktemp -d)
storescp -od "$RECEIVED" 11112 & SCP=$!
trap 'kill $SCP 2>/dev/null || true' EXIT
sleep 1
STUDY_UID=$(.venv/bin/python -c "import pydicom, sys; print(pydicom.dcmread(sys.argv[1]).StudyInstanceUID)" "$CT")
storescu -aet MODALITY -aec ORTHANC 127.0.0.1 "$DICOM" "$CT"
STUDY=""
for _ in $(seq 50); do  # Orthanc's index may answer a moment after the C-STORE's response
    STUDY=$(curl -sf -u "$REST" -X POST "http://127.0.0.1:$HTTP/tools/lookup" -d "$STUDY_UID" \
        | .venv/bin/python -c 'import json,sys; found = json.load(sys.stdin); print(found[0]["ID"] if found else "")')
    [ -n "$STUDY" ] && break
    sleep 0.2
done
[ -n "$STUDY" ] || { echo "the study sent as MODALITY is not in Orthanc" >&2; exit 1; }
echo "RESULT send=$(curl -sf -u "$REST" -X POST "http://127.0.0.1:$HTTP/modalities/research-ct/store" -d "$STUDY" | tr -d '\n')"
echo "RESULT received-patient-id=$(.venv/bin/python -c "import glob, pydicom; print(pydicom.dcmread(sorted(glob.glob('$RECEIVED/*'))[0]).PatientID)")"
echo "RESULT original-patient-id=$(.venv/bin/python -c "import pydicom, sys; print(pydicom.dcmread(sys.argv[1]).PatientID)" "$CT")"
