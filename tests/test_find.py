"""C-FIND without Orthanc: DICOM matching as Orthanc applies it, answers as Orthanc builds them,
and the de-identified world's query plan. (Orthanc's own lookup is compared with the plugin's in
tests/integration/test_find_native.py.)"""

from __future__ import annotations

import pytest

from coercion.exchanges.find import (
    MODALITIES_IN_STUDY,
    RETRIEVE_AE_TITLE,
    Constraint,
    FindBehaviour,
    FindError,
    FindRequest,
    FindSettings,
    OrthancFind,
    _normalize_identifier,
    answer_values,
    build_answer,
    encode_answer,
    encode_values,
    query_dataset,
    sequence_from_full,
    values_from_full,
)
from coercion.exchanges.find_coercion import action_for, plan_query
from coercion.exchanges.orthanc_api import OrthancError, OrthancRelease, read_query_request
from coercion.stores.linkage import SQLiteLinkageStore

from factory import deidentifier

PATIENT_NAME, PATIENT_ID, STUDY_DATE, STUDY_UID, MODALITY = 0x00100010, 0x00100020, 0x00080020, 0x0020000D, 0x00080060


def request(*pairs):
    return FindRequest.from_pairs(sorted(pairs))


@pytest.mark.parametrize("value, stored, expected", [
    ("20240101-20241231", "20240615", True), ("20240101-20241231", "20250101", False),
    ("-20240101", "20231231", True), ("20240101-", "20231231", False), ("20240101-", "20240101", True),
])
def test_date_ranges(value, stored, expected):
    assert Constraint(STUDY_DATE, value, "DA").kind == "range"
    assert Constraint(STUDY_DATE, value, "DA").matches(stored) is expected


def test_wildcards_only_for_text_vrs_and_a_range_only_for_dates():
    assert Constraint(STUDY_DATE, "2024*", "DA").kind == "equal"
    assert not Constraint(STUDY_DATE, "2024*", "DA").matches("20240101")
    assert Constraint(0x00080050, "AC?-*", "SH").matches("ACX-123")
    assert not Constraint(0x00080050, "AC?-*", "SH").matches("ACXY-123")
    assert Constraint(0x00080050, "A-B", "SH").kind == "equal"  # "-" is no range on text


def test_case_rules_fold_case_not_accents_for_person_names_only_when_insensitive():
    # Orthanc's ToUpperCaseWithAccents: a character at a time, accents kept.
    assert Constraint(PATIENT_NAME, "MÜLLER*", "PN", case_sensitive=False).matches("Müller^Zoë")
    assert not Constraint(PATIENT_NAME, "MULLER*", "PN", case_sensitive=False).matches("Müller^Zoë")
    assert not Constraint(PATIENT_NAME, "müller*", "PN", case_sensitive=True).matches("Müller^Zoë")
    assert Constraint(PATIENT_NAME, "STRASSE", "PN", case_sensitive=False).matches("strasse")
    assert not Constraint(PATIENT_NAME, "STRASSE", "PN", case_sensitive=False).matches("straße")
    assert not Constraint(PATIENT_ID, "mrn1", "LO").matches("MRN1")
    assert not Constraint(PATIENT_ID, "MRN1", "LO").matches(None)  # absent never matches


def test_lists_and_modalities_in_study():
    assert Constraint(STUDY_UID, "1.2\\1.3", "UI").matches("1.3")
    assert not Constraint(STUDY_UID, "1.2\\1.3", "UI").matches("1.4")
    modalities = Constraint(MODALITIES_IN_STUDY, "MR", "CS")
    assert modalities.kind == "list" and modalities.matches("CT\\MR") and not modalities.matches("CT")


def test_case_dependence():
    assert Constraint(PATIENT_ID, "mrn*", "LO").case_dependent
    assert not Constraint(STUDY_UID, "1.2.3", "UI").case_dependent
    assert not Constraint(STUDY_DATE, "20240101-20240202", "DA").case_dependent


def test_the_request_level_and_constraints_as_orthancs_scp_reads_them():
    req = request((0x00080052, "IMAGE"), (0x00080005, "ISO_IR 100"), (PATIENT_NAME, "Doe*"), (PATIENT_ID, ""),
                  (0x00100000, "4"), (0x00081110, ""))
    assert req.level == "Instance"
    constraints = req.constraints(case_sensitive_pn=False)
    assert [(c.tag, c.case_sensitive) for c in constraints] == [(PATIENT_NAME, False)]
    assert req.sequences == (0x00081110,)
    with pytest.raises(FindError, match="0008,0052"):
        _ = request((PATIENT_ID, "")).level
    with pytest.raises(FindError, match="WORKLIST"):
        _ = request((0x00080052, "WORKLIST")).level


def test_which_queries_need_the_stored_instance():
    assert not request((0x00080052, "STUDY"), (PATIENT_NAME, ""), (MODALITIES_IN_STUDY, "")).needs_instance_tags()
    assert request((0x00080052, "STUDY"), (0x00101010, "")).needs_instance_tags()  # PatientAge
    assert request((0x00080052, "STUDY"), (0x00081032, "")).needs_instance_tags()  # a sequence


def test_an_answer_is_built_as_orthanc_builds_it():
    req = request((0x00080052, "STUDY"), (0x00080005, "ISO_IR 100"), (PATIENT_NAME, ""), (PATIENT_ID, "X*"),
                  (0x00091001, ""), (0x00081032, ""))
    answer = build_answer(req, {PATIENT_NAME: "Doe^John", PATIENT_ID: "X1", 0x00091001: "private"},
                          {0x00201208: "3"}, "ORTHANC")
    assert answer[RETRIEVE_AE_TITLE].value == "ORTHANC"
    assert answer.QueryRetrieveLevel == "STUDY" and answer.PatientName == "Doe^John"
    assert answer[0x00091001].VR == "UN"  # Orthanc has no private dictionary for answers
    assert 0x00081032 not in answer  # a sequence absent from the instance is not answered
    assert answer[0x00201208].value == "3"
    assert answer.SpecificCharacterSet == "ISO_IR 192"  # Orthanc re-encodes as configured
    assert encode_answer(answer)[128:132] == b"DICM"
    # A Retrieve AE Title asked for is answered from the instance, as Orthanc does.
    asked = build_answer(request((0x00080052, "STUDY"), (RETRIEVE_AE_TITLE, "")), {}, {}, "ORTHANC")
    assert asked[RETRIEVE_AE_TITLE].value in ("", None)


def test_values_and_sequences_from_orthancs_full_json():
    tags = {"0010,0010": {"Name": "PatientName", "Type": "String", "Value": "Doe"},
            "0010,4000": {"Name": "PatientComments", "Type": "TooLong"},
            "0008,1032": {"Name": "ProcedureCodeSequence", "Type": "Sequence", "Value": [
                {"0008,0100": {"Type": "String", "Value": "CT1"}, "0008,0104": {"Type": "Null", "Value": None}}]}}
    assert values_from_full(tags) == {PATIENT_NAME: "Doe", 0x00104000: None, 0x00081032: None}
    items = sequence_from_full(tags["0008,1032"])
    assert items[0].CodeValue == "CT1" and items[0].CodeMeaning == ""


def test_orthancs_identifier_normalization():
    assert _normalize_identifier("Παπα*") == "*"
    assert _normalize_identifier(" mü_ller%x ") == "M LLER X"


def test_a_query_becomes_a_dataset_for_rule_conditions():
    ds = query_dataset(request((0x00080052, "STUDY"), (MODALITY, "CT")))
    assert ds.Modality == "CT" and ds.QueryRetrieveLevel == "STUDY"


# -- the de-identified world ---------------------------------------------------------------

URI = "deidentify:RetainPatientIDHashOption,RetainLongitudinalTemporalInformationModifiedDatesOption"


@pytest.fixture
def store(tmp_path, keys):
    return SQLiteLinkageStore(tmp_path / "linkage.db", keys)


def test_the_profile_decides_what_orthanc_matches_and_what_the_answer_must_match(store):
    world = deidentifier(URI)
    assert action_for(world, MODALITY) == "K" and action_for(world, PATIENT_ID) == "P"
    store.record_uids([("1.2.3", "2.25.9")])
    store.record("PSEUDO", "HOSP", "MRN1", "rule")
    req = request((0x00080052, "STUDY"), (STUDY_UID, "2.25.9"), (PATIENT_ID, "PSEUDO"), (MODALITY, "CT"),
                  (STUDY_DATE, "20240101-20240131"), (PATIENT_NAME, "Doe*"))
    plan = plan_query(req, world, store, case_sensitive_pn=False)
    low, high = world.keys.date_shift_window
    from datetime import date, timedelta
    widened = ((date(2024, 1, 1) - timedelta(days=high)).strftime("%Y%m%d") + "-"
               + (date(2024, 1, 31) - timedelta(days=low)).strftime("%Y%m%d"))
    assert sorted((c.tag, c.value) for c in plan.lookup) == [(STUDY_DATE, widened), (MODALITY, "CT"),
                                                             (PATIENT_ID, "MRN1"), (STUDY_UID, "1.2.3")]
    # What the profile changes is matched on the de-identified answer: shifted dates, names.
    assert sorted(c.tag for c in plan.on_answer) == [STUDY_DATE, PATIENT_NAME, PATIENT_ID, STUDY_UID]
    assert not plan.nothing


def test_a_pseudonym_nobody_was_given_matches_nothing(store):
    plan = plan_query(request((0x00080052, "STUDY"), (STUDY_UID, "2.25.1")), deidentifier(URI), store, False)
    assert plan.nothing


def test_a_wildcard_on_a_hashed_id_is_matched_on_the_answer_only(store):
    plan = plan_query(request((0x00080052, "STUDY"), (PATIENT_ID, "AB*")), deidentifier(URI), store, False)
    assert plan.lookup == [] and [c.tag for c in plan.on_answer] == [PATIENT_ID] and not plan.nothing


def test_uid_links_are_kept_and_found_in_bulk(store, tmp_path, keys):
    store.record_uids([(f"1.2.{i}", f"2.25.{i}") for i in range(1200)])
    store.record_uids([("1.2.0", "2.25.0")])  # again: no error, no duplicate
    found = store.original_uids([f"2.25.{i}" for i in range(0, 1200, 2)] + ["2.25.99999"])
    assert len(found) == 600 and found["2.25.10"] == "1.2.10"
    assert SQLiteLinkageStore(tmp_path / "linkage.db", keys).original_uids(["2.25.7"]) == {"2.25.7": "1.2.7"}


def test_the_fast_answer_writer_writes_what_pydicom_writes():
    import io

    import pydicom

    req = request((0x00080052, "STUDY"), (PATIENT_NAME, ""), (PATIENT_ID, ""), (STUDY_DATE, ""), (0x00280010, ""),
                  (0x00280030, ""), (0x00091001, ""), (0x00201208, ""), (0x00081030, ""))
    match = {PATIENT_NAME: "Müller^Zoë", PATIENT_ID: "X1", STUDY_DATE: "20240101", 0x00280010: "512",
             0x00280030: "0.5\\0.5", 0x00091001: "odd", 0x00081030: "Ελληνικά"}
    fast = pydicom.dcmread(io.BytesIO(encode_values(answer_values(req, match, {0x00201208: "12"}, "ORTHANC"))))
    slow = pydicom.dcmread(io.BytesIO(encode_answer(build_answer(req, match, {0x00201208: "12"}, "ORTHANC"))))
    def elements(ds):  # pydicom leaves an odd UN value unpadded; DICOM (and DCMTK) pad it with a NUL
        return [(e.tag, e.VR, e.value.rstrip(b"\0") if e.VR == "UN" else e.value) for e in ds]

    assert elements(fast) == elements(slow)
    assert fast.PatientName == "Müller^Zoë" and fast.Rows == 512 and fast[0x00091001].value == b"odd\0"


# -- outgoing queries ----------------------------------------------------------------------

def test_an_outgoing_query_is_put_into_the_peers_world():
    from coercion.exchanges.find_outgoing import QueryRefused, coerce_query

    deid = deidentifier(URI)
    keys = deid.keys
    out = coerce_query({"PatientID": "MRN1", "StudyInstanceUID": "1.2\\1.3", "StudyDate": "20240101-20240131",
                        "Modality": "CT", "PatientName": "", "0008,0050": ""}, deid, "r", lambda pid: ["HOSP"])
    days = keys.date_shift_days("MRN1", "HOSP")
    assert out["PatientID"] == keys.patient_id("MRN1", "HOSP")
    assert out["StudyInstanceUID"] == f"{keys.uid('1.2')}\\{keys.uid('1.3')}"
    low, high = out["StudyDate"].split("-")
    from datetime import date, timedelta
    assert low == (date(2024, 1, 1) + timedelta(days=days)).strftime("%Y%m%d")
    assert high == (date(2024, 1, 31) + timedelta(days=days)).strftime("%Y%m%d")
    assert (out["Modality"], out["PatientName"], out["0008,0050"]) == ("CT", "", "")
    # a patient known under two issuers is asked for under both hashes
    both = coerce_query({"PatientID": "MRN1"}, deid, "r", lambda pid: ["A", "B"])
    assert both["PatientID"] == f"{keys.patient_id('MRN1', 'A')}\\{keys.patient_id('MRN1', 'B')}"
    with pytest.raises(QueryRefused, match="known under several issuers"):
        coerce_query({"PatientID": "MRN1", "StudyDate": "20240101"}, deid, "r", lambda pid: ["A", "B"])
    with pytest.raises(QueryRefused, match="unknown query key 'NoSuchKeyword'"):
        coerce_query({"NoSuchKeyword": "x"}, deid, "r", lambda pid: [])


def test_answers_round_trip_through_orthancs_json_forms():
    from coercion.exchanges.find_outgoing import coerce_answer, dataset_from_json, dataset_to_json

    full = {"0010,0010": {"Name": "PatientName", "Type": "String", "Value": "Doe^John"},
            "0020,000d": {"Name": "StudyInstanceUID", "Type": "String", "Value": "1.2.3"},
            "0008,1032": {"Name": "ProcedureCodeSequence", "Type": "Sequence",
                          "Value": [{"0008,0100": {"Name": "CodeValue", "Type": "String", "Value": "X"}}]},
            "0010,0030": {"Name": "PatientBirthDate", "Type": "Null", "Value": None}}
    ds = dataset_from_json(full, "full")
    assert ds.PatientName == "Doe^John" and ds.ProcedureCodeSequence[0].CodeValue == "X"
    assert dataset_to_json(ds, "full")["0010,0010"]["Value"] == "Doe^John"
    assert dataset_to_json(ds, "simplify")["ProcedureCodeSequence"] == [{"CodeValue": "X"}]
    assert dataset_to_json(ds, "short")["0020,000d"] == "1.2.3"
    coerced = coerce_answer(dataset_to_json(ds, "simplify"), "simplify", deidentifier("deidentify:"))
    assert "Doe" not in str(coerced) and coerced["StudyInstanceUID"].startswith("2.25.")


# -- the running Orthanc's own SCP, release by release ----------------------------------------



@pytest.mark.parametrize("system, expected", [
    ({"Version": "1.10.1"}, FindBehaviour()),
    ({"Version": "1.12.7", "Capabilities": {"HasExtendedFind": True}},
     FindBehaviour(resource_finder=True, scp_applies_limits=False)),
    ({"Version": "1.12.11", "Capabilities": {}}, FindBehaviour(resource_finder=True)),
    ({"Version": "1.13.0", "Capabilities": {}},
     FindBehaviour(resource_finder=True, copies_sequences=True, matches_private_creators=False)),
    ({"Version": "mainline", "Capabilities": {}},
     FindBehaviour(resource_finder=True, copies_sequences=True, matches_private_creators=False)),
])
def test_what_orthancs_own_scp_does_is_read_from_what_it_says_of_itself(system, expected):
    assert FindBehaviour.of(OrthancRelease.of(system)) == expected


def test_an_unknown_level_is_refused_with_orthancs_details_of_its_release():
    body = b'{"Level": "Frame"}'
    for release, details in ((OrthancRelease((1, 10, 1)), None),
                             (OrthancRelease((1, 12, 7)), "Invalid resource type 'Frame'")):
        with pytest.raises(OrthancError) as refused:
            read_query_request(body, lambda name: True, "peer", lambda key: True, release)
        assert (refused.value.code, refused.value.details) == (3, details)


class FakeFind:
    """Orthanc's /tools/find as ResourceFinder answers it (Full format), over a list of
    resources: case-insensitive matching of Query, Since and Limit, a database cap."""

    def __init__(self, resources, cap=0):
        self.resources, self.cap, self.bodies = resources, cap, []

    def post(self, path, body):
        self.bodies.append(body)
        if path == "/tools/count-resources":  # the database's candidates: every resource here
            return {"Count": len(self.resources)}
        assert path == "/tools/find"
        found = [r for r in self.resources
                 if all(Constraint(int(k.replace(",", ""), 16), v, "PN", case_sensitive=False).matches(
                        r["RequestedTags"].get(k, {}).get("Value")) for k, v in body["Query"].items())]
        found = found[body.get("Since", 0):]
        limit = min(x for x in (body.get("Limit", 0), self.cap) if x) if body.get("Limit") or self.cap else 0
        return found[:limit] if limit else found


def study(n, name, sequence=None):
    tags = {"0010,0010": {"Type": "String", "Value": name}, "0020,000d": {"Type": "String", "Value": f"1.2.{n}"}}
    if sequence is not None:
        tags["0008,1032"] = {"Type": "Sequence", "Value": sequence}
    return {"ID": f"s{n}", "MainDicomTags": {}, "PatientMainDicomTags": {}, "RequestedTags": tags}


def test_a_resource_finder_orthanc_is_asked_for_every_key_as_a_requested_tag():
    rest = FakeFind([study(1, "DOE^JOHN"), study(2, "ROE^JANE")])
    finder = OrthancFind(rest, FindSettings(), FindBehaviour(resource_finder=True))
    result = finder.find(request((0x00080052, "STUDY"), (PATIENT_NAME, "doe*"), (STUDY_UID, ""),
                                 (0x00080201, "+0100")))
    assert [m.resource for m in result.matches] == ["s1"] and result.complete
    body = rest.bodies[0]
    assert body["RequestedTags"] == ["0010,0010", "0020,000d"] and body["Full"] is True
    assert "0008,0201" not in body["Query"]  # the time zone is never matched
    assert result.matches[0].values[PATIENT_NAME] == "DOE^JOHN"


def test_a_case_sensitive_key_beside_a_person_name_is_applied_to_the_answers():
    rest = FakeFind([study(1, "DOE^JOHN"), study(2, "doe^jim")])
    finder = OrthancFind(rest, FindSettings(), FindBehaviour(resource_finder=True))
    # PN without case, another key with it (the SCP's per-VR rule; /tools/find has one switch).
    found = finder.find(request((0x00080052, "STUDY"), (PATIENT_NAME, "DOE*"), (STUDY_UID, "1.2.2")))
    assert [m.resource for m in found.matches] == ["s2"] and rest.bodies[0]["CaseSensitive"] is False


@pytest.mark.parametrize("behaviour, expected", [
    (FindBehaviour(resource_finder=True, scp_applies_limits=False), ({}, [])),  # 1.12: none, or empty
    (FindBehaviour(resource_finder=True, copies_sequences=True), ({"CT1"}, [])),  # 1.13: copied
])
def test_requested_sequences_as_each_release_answers_them(behaviour, expected):
    item = {"0008,0100": {"Type": "String", "Value": "CT1"}}
    rest = FakeFind([study(1, "A^B", sequence=[item]), study(2, "C^D")])
    finder = OrthancFind(rest, FindSettings(), behaviour)
    found = finder.find(request((0x00080052, "STUDY"), (0x00081032, ""), (STUDY_UID, "")))
    first, second = (m.sequences for m in found.matches)
    held = {i.CodeValue for i in first[0x00081032]} if 0x00081032 in first else {}
    assert (held, list(second[0x00081032])) == expected


def test_private_creators_are_matched_until_orthanc_1_13():
    rest = FakeFind([study(1, "A^B")])
    creator = (0x00090010, "ACME 1.0")
    OrthancFind(rest, FindSettings(), FindBehaviour(resource_finder=True)).find(
        request((0x00080052, "STUDY"), creator))
    OrthancFind(rest, FindSettings(), FindBehaviour(resource_finder=True, matches_private_creators=False)).find(
        request((0x00080052, "STUDY"), creator))
    assert [b["Query"] for b in rest.bodies] == [{"0009,0010": "ACME 1.0"}, {}]


def test_orthancs_limit_cuts_as_the_scp_cuts_or_is_read_past_where_the_scp_ignores_it():
    resources = [study(n, "DOE^X" if n % 2 else "ROE^Y") for n in range(1, 11)]
    limited = FindSettings(limit_results=2)
    query = request((0x00080052, "STUDY"), (PATIENT_NAME, "DOE*"))
    applies = FakeFind(resources, cap=2)
    result = OrthancFind(applies, limited, FindBehaviour(resource_finder=True)).find(query)
    assert [m.resource for m in result.matches] == ["s1", "s3"]
    ignores = FakeFind(resources, cap=2)  # 1.12.5 to 1.12.10: the SCP answers every match
    result = OrthancFind(ignores, limited, FindBehaviour(resource_finder=True, scp_applies_limits=False)).find(query)
    assert [m.resource for m in result.matches] == ["s1", "s3", "s5", "s7", "s9"] and result.complete
    assert ignores.bodies[0]["Query"] == {"0010,0010": "DOE*"}  # Orthanc checks the query first
    assert all(b["Query"] == {} and b["Limit"] == 2 for b in ignores.bodies[1:])  # then pages


def test_the_level_is_read_past_orthancs_limit_only_when_its_candidates_exceed_it():
    behaviour = FindBehaviour(resource_finder=True, scp_applies_limits=False)
    query = request((0x00080052, "STUDY"), (PATIENT_NAME, "DOE*"))
    # Ten candidates, a limit of two: Orthanc's short answer may have been cut before its full
    # match, so the level is read a page at a time.
    many = FakeFind([study(n, "DOE^X" if n == 3 else "ROE^Y") for n in range(1, 11)], cap=2)
    result = OrthancFind(many, FindSettings(limit_results=2), behaviour).find(query)
    assert [m.resource for m in result.matches] == ["s3"]
    assert [b.get("Since") for b in many.bodies[2:]] == [0, 2, 4, 6, 8, 10]
    # Two candidates: the answer is whole, nothing more is read.
    few = FakeFind([study(1, "DOE^X"), study(2, "ROE^Y")], cap=2)
    result = OrthancFind(few, FindSettings(limit_results=2), behaviour).find(query)
    assert [m.resource for m in result.matches] == ["s1"] and len(few.bodies) == 2


def test_a_coerced_lookup_says_when_orthancs_limit_cut_it():
    rest = FakeFind([study(n, "DOE^X") for n in range(1, 6)], cap=2)
    finder = OrthancFind(rest, FindSettings(limit_results=2), FindBehaviour(resource_finder=True))
    found = list(finder.matches(request((0x00080052, "STUDY"), (PATIENT_NAME, "DOE*")),
                                [Constraint(PATIENT_NAME, "DOE*", "PN", case_sensitive=False)]))
    assert len(found) == 2 and finder.cut and len(rest.bodies) == 1
