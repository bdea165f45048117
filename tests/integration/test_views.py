"""De-identified DICOMweb views, read with a real DICOMweb client (dicomweb-client) and compared
with what Orthanc's own DICOMweb plugin answers for the same study."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from coercion import Keys

from factory import encode, make_ct
from orthanc_server import REST_AUTH, SECRET, OrthancServer, needs_orthanc

pytestmark = needs_orthanc
dicomweb_client = pytest.importorskip("dicomweb_client")
KEYS = Keys(SECRET)
VIEW_TOKEN = "view-token-0123456789abcdef"
VIEWER = ("viewer", "viewer-password-0123456789")
URI = "deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption"
RULES = f"""
- name: to-research
  dimse: C_STORE_RQ
  role: SCP
  receiving-aet: [RESEARCH]
  uri: "{URI}"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    token = root / "view.token"
    token.touch(mode=0o600)
    token.write_text(VIEW_TOKEN + "\n")
    main = OrthancServer(root / "main", rules=RULES, modalities={"RESEARCH": 1},
                         coercion={"Views": {"research": {"Rule": "to-research", "TokenFile": str(token),
                                                          "Users": [VIEWER[0]]}}},
                         settings={"RegisteredUsers": {VIEWER[0]: VIEWER[1]}}).start()
    study, series, patient = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}", f"MRN-{uuid.uuid4().hex[:8]}"
    originals = []
    for number in range(2):
        ds = make_ct(patient_id=patient, study_uid=study, series_uid=series, sop_uid=f"2.25.{uuid.uuid4().int}")
        ds.InstanceNumber = number + 1
        assert main.post("/instances", encode(ds)).ok
        originals.append(ds)
    yield main, originals
    main.stop()


def client(main, headers=None, auth=REST_AUTH):
    session = requests.Session()
    session.auth = auth
    return dicomweb_client.DICOMwebClient(f"{main.url}/coercion/dicom-web/research", session=session,
                                          headers={"X-Coercion-Token": VIEW_TOKEN} if headers is None else headers)


def native(main):
    session = requests.Session()
    session.auth = REST_AUTH
    return dicomweb_client.DICOMwebClient(f"{main.url}/dicom-web", session=session)


def identifying(ds) -> list[str]:
    return [str(ds.PatientID), str(ds.PatientName), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID), str(ds.StudyDate)]


def assert_no_leak(answer, originals):
    text = json.dumps(answer) if not isinstance(answer, (bytes, bytearray)) else answer.decode("latin-1")
    for ds in originals:
        for value in identifying(ds):
            assert value not in text, "an original value in the view's answer"


def pseudonym_of(ds) -> str:
    return KEYS.patient_id(str(ds.PatientID), str(ds.get("IssuerOfPatientID", "")))


def test_a_search_by_the_pseudonym_finds_the_study_in_the_rules_world(site):
    main, originals = site
    # A viewer's study list first: what it shows is handed out, and can be searched by after.
    listed = client(main).search_for_studies()
    assert KEYS.uid(originals[0].StudyInstanceUID) in [a["0020000D"]["Value"][0] for a in listed]
    assert_no_leak(listed, originals)
    found = client(main).search_for_studies(search_filters={"PatientID": pseudonym_of(originals[0])})
    assert len(found) == 1, found
    answer = found[0]
    assert answer["0020000D"]["Value"] == [KEYS.uid(originals[0].StudyInstanceUID)]
    assert answer["00100020"]["Value"] == [pseudonym_of(originals[0])]
    assert answer["00081190"]["Value"][0].endswith(f"/coercion/dicom-web/research/studies/{KEYS.uid(originals[0].StudyInstanceUID)}")
    assert_no_leak(found, originals)
    # The same study through Orthanc's own DICOMweb plugin: the same attributes
    theirs = native(main).search_for_studies(search_filters={"StudyInstanceUID": originals[0].StudyInstanceUID})
    assert sorted(answer) == sorted(theirs[0]), (answer, theirs[0])
    # A shifted date finds it too, the original date does not
    shifted = answer["00080020"]["Value"][0]
    assert shifted != originals[0].StudyDate
    by_date = client(main).search_for_studies(search_filters={"StudyDate": shifted,
                                                              "PatientID": pseudonym_of(originals[0])})
    assert len(by_date) == 1
    assert client(main).search_for_studies(search_filters={"StudyDate": originals[0].StudyDate,
                                                           "PatientID": pseudonym_of(originals[0])}) == []


def test_series_and_instances_are_searched_and_retrieved_in_pseudonyms(site):
    main, originals = site
    view = client(main)
    study = KEYS.uid(originals[0].StudyInstanceUID)
    view.search_for_studies()  # hands the study out
    series = view.search_for_series(study_instance_uid=study)
    assert [s["0020000E"]["Value"][0] for s in series] == [KEYS.uid(originals[0].SeriesInstanceUID)]
    theirs = native(main).search_for_series(study_instance_uid=originals[0].StudyInstanceUID)
    assert sorted(series[0]) == sorted(theirs[0]), (sorted(set(series[0]) - set(theirs[0])), sorted(set(theirs[0]) - set(series[0])))
    instances = view.search_for_instances(study_instance_uid=study, series_instance_uid=series[0]["0020000E"]["Value"][0])
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(KEYS.uid(ds.SOPInstanceUID) for ds in originals)
    theirs = native(main).search_for_instances(study_instance_uid=originals[0].StudyInstanceUID,
                                               series_instance_uid=originals[0].SeriesInstanceUID)
    assert [sorted(i) for i in instances] == [sorted(t) for t in theirs]
    everywhere = view.search_for_instances(search_filters={"SOPInstanceUID": KEYS.uid(originals[0].SOPInstanceUID)})
    theirs = native(main).search_for_instances(search_filters={"SOPInstanceUID": originals[0].SOPInstanceUID})
    assert len(everywhere) == 1 and sorted(everywhere[0]) == sorted(theirs[0])  # study and series attributes too
    assert_no_leak(series + instances, originals)
    retrieved = view.retrieve_study(study)
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(KEYS.uid(ds.SOPInstanceUID) for ds in originals)
    by_uid = {KEYS.uid(ds.SOPInstanceUID): ds for ds in originals}
    for ds in retrieved:
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == pseudonym_of(originals[0])
        assert ds.PixelData == by_uid[ds.SOPInstanceUID].PixelData  # no pixel option: byte for byte
    metadata = view.retrieve_series_metadata(study, KEYS.uid(originals[0].SeriesInstanceUID))
    assert len(metadata) == 2 and all("7FE00010" not in m for m in metadata)
    assert_no_leak(metadata, originals)
    frames = view.retrieve_instance_frames(study, KEYS.uid(originals[0].SeriesInstanceUID),
                                           KEYS.uid(originals[0].SOPInstanceUID), frame_numbers=[1])
    assert frames[0] == originals[0].PixelData


def test_a_uid_the_view_never_handed_out_is_not_found(site):
    main, _ = site
    response = requests.get(f"{main.url}/coercion/dicom-web/research/studies/{KEYS.uid('1.2.3.4')}",
                            auth=REST_AUTH, headers={"X-Coercion-Token": VIEW_TOKEN})
    assert response.status_code == 404


def test_a_view_opens_with_its_credential_or_its_user_only(site):
    main, originals = site
    url = f"{main.url}/coercion/dicom-web/research/studies"
    assert requests.get(url, auth=REST_AUTH).status_code == 403
    assert requests.get(url, auth=REST_AUTH, headers={"X-Coercion-Token": "x" * 27}).status_code == 403
    assert requests.get(url, auth=VIEWER).status_code == 200
    # The view's user reaches nothing else of Orthanc
    for path in ("/patients", "/system", "/coercion/rules", "/dicom-web/studies", "/coercion/dicom-web/other/studies"):
        assert requests.get(main.url + path, auth=VIEWER).status_code == 403, path
    assert requests.post(main.url + "/instances", encode(make_ct()), auth=VIEWER).status_code == 403


def test_a_view_user_orthanc_does_not_authenticate_stops_orthanc(tmp_path):
    # The plugin trusts a request's user name only because Orthanc checked its password.
    server = OrthancServer(tmp_path / "orthanc", rules=RULES, modalities={"RESEARCH": 1},
                           coercion={"Views": {"research": {"Rule": "to-research", "Users": ["ghost"]}}})
    with pytest.raises(RuntimeError, match="exited with"):
        server.start()
    assert "Coercion.Views.research.Users: 'ghost' not among RegisteredUsers" in server.log()
