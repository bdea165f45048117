"""The MPPS SCP without Orthanc or a network: its checks (PS3.4 F.7), its state machine over the
store, coercion per calling AE title, the worklist hook, and the forwards (order, retries,
nothing sent twice); the store's sealing and files."""

from __future__ import annotations

import copy
import json
import stat
import textwrap
import uuid

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode

from coercion import Keys
from coercion.exchanges import mpps
from coercion.exchanges.mpps import (
    COMPLETED,
    DISCONTINUED,
    IN_PROGRESS,
    MPPS_SOP_CLASS,
    Message,
    MppsExchange,
    Refused,
    admitted,
    check_create,
    check_set,
    read_list,
)
from coercion.rules import RuleError, load_rules
from coercion.service import CoercionService, Settings
from coercion.stores.mpps import Delivery, DuplicateStep, Kept, Step, open_mpps_store
from coercion.stores.sqlitefiles import StoreError

from factory import OTHER_SECRET, SECRET

KEYS = Keys(SECRET)


# -- MPPS messages, as a modality sends them --------------------------------------------------


def create_attributes(patient_name="Doe^Jane", patient_id="MRN-1", accession="ACC-1", study_uid=None,
                      step_id="SPS-1", requested="RP-1", status=IN_PROGRESS, station="MODALITY") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    item = Dataset()
    item.StudyInstanceUID = study_uid or f"2.25.{uuid.uuid4().int}"
    item.ReferencedStudySequence = Sequence()
    item.AccessionNumber = accession
    item.RequestedProcedureID = requested
    item.RequestedProcedureDescription = "CT chest"
    item.ScheduledProcedureStepID = step_id
    item.ScheduledProcedureStepDescription = "CT chest"
    item.ScheduledProtocolCodeSequence = Sequence()
    ds.ScheduledStepAttributesSequence = Sequence([item])
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.ReferencedPatientSequence = Sequence()
    ds.PerformedProcedureStepID = "PPS-1"
    ds.PerformedStationAETitle = station
    ds.PerformedStationName = "ROOM 1"
    ds.PerformedLocation = "ROOM 1"
    ds.PerformedProcedureStepStartDate = "20241101"
    ds.PerformedProcedureStepStartTime = "083000"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepDescription = "CT chest"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = Sequence()
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = "S1"
    ds.PerformedProtocolCodeSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence()
    return ds


def performed_series(images=2, operator="Tech^Tom") -> Dataset:
    series = Dataset()
    series.PerformingPhysicianName = "House^Gregory"
    series.ProtocolName = "Chest"
    series.OperatorsName = operator
    series.SeriesInstanceUID = f"2.25.{uuid.uuid4().int}"
    series.SeriesDescription = "Chest 1 mm"
    series.RetrieveAETitle = "ORTHANC"
    refs = []
    for _ in range(images):
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ref.ReferencedSOPInstanceUID = f"2.25.{uuid.uuid4().int}"
        refs.append(ref)
    series.ReferencedImageSequence = Sequence(refs)
    series.ReferencedNonImageCompositeSOPInstanceSequence = Sequence()
    return series


def set_modifications(status=None, series=None, end=True, **extra) -> Dataset:
    ds = Dataset()
    if status:
        ds.PerformedProcedureStepStatus = status
    if end:
        ds.PerformedProcedureStepEndDate = "20241101"
        ds.PerformedProcedureStepEndTime = "091500"
    if series is not None:
        ds.PerformedSeriesSequence = Sequence(series)
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def message(ds: Dataset | None, uid: str | None, calling="MODALITY", host="127.0.0.1", sop_class=MPPS_SOP_CLASS,
            data: bytes | None = None) -> Message:
    return Message(calling, "ORTHANC", host, sop_class, uid, data if data is not None else encode(ds, True, True))


def new_uid() -> str:
    return f"1.2.826.0.1.3680043.8.498.{uuid.uuid4().int % 10**30}"


# -- the checks -------------------------------------------------------------------------------


def test_a_complete_n_create_passes():
    check_create(create_attributes())


@pytest.mark.parametrize("keyword", ["PerformedProcedureStepID", "PerformedStationAETitle", "Modality",
                                     "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
                                     "ScheduledStepAttributesSequence", "PerformedProcedureStepStatus"])
def test_a_missing_type_1_attribute_is_missing_attribute(keyword):
    ds = create_attributes()
    delattr(ds, keyword)
    with pytest.raises(Refused) as refused:
        check_create(ds)
    assert refused.value.status == 0x0120 and keyword in refused.value.comment


@pytest.mark.parametrize("keyword, empty", [("PerformedStationAETitle", ""), ("PerformedProcedureStepID", ""),
                                            ("ScheduledStepAttributesSequence", Sequence())])
def test_a_type_1_attribute_without_value_is_missing_attribute_value(keyword, empty):
    ds = create_attributes()
    setattr(ds, keyword, empty)
    with pytest.raises(Refused) as refused:
        check_create(ds)
    assert refused.value.status == 0x0121 and keyword in refused.value.comment


def test_type_1_attributes_of_items_are_checked_too():
    ds = create_attributes()
    del ds.ScheduledStepAttributesSequence[0].StudyInstanceUID
    with pytest.raises(Refused, match="ScheduledStepAttributesSequence>StudyInstanceUID") as refused:
        check_create(ds)
    assert refused.value.status == 0x0120
    ds = create_attributes()
    series = performed_series()
    series.ReferencedImageSequence[1].ReferencedSOPInstanceUID = ""
    ds.PerformedSeriesSequence = Sequence([series])
    with pytest.raises(Refused, match="ReferencedImageSequence>ReferencedSOPInstanceUID") as refused:
        check_create(ds)
    assert refused.value.status == 0x0121


@pytest.mark.parametrize("status", [COMPLETED, DISCONTINUED, "SCHEDULED"])
def test_an_n_create_not_in_progress_is_an_invalid_attribute_value(status):
    with pytest.raises(Refused) as refused:
        check_create(create_attributes(status=status))
    assert refused.value.status == 0x0106 and refused.value.tags == (0x00400252,)


def test_an_n_set_of_a_step_no_longer_in_progress_may_no_longer_be_updated():
    for status in (COMPLETED, DISCONTINUED):
        with pytest.raises(Refused) as refused:
            check_set(status, set_modifications(), {})
        assert (refused.value.status, refused.value.error_id) == (0x0110, 0xA710)
        assert refused.value.comment == "Performed Procedure Step Object may no longer be updated"


def test_an_n_set_may_not_change_what_table_f_7_2_1_does_not_allow():
    modifications = set_modifications(PatientName="Other^Name", PerformedStationAETitle="ELSEWHERE")
    with pytest.raises(Refused) as refused:
        check_set(IN_PROGRESS, modifications, {})
    assert refused.value.status == 0x0105
    assert refused.value.tags == (0x00100010, 0x00400241)
    assert "Other" not in refused.value.comment and "PatientName" in refused.value.comment


def test_an_n_set_gives_one_of_the_three_statuses_and_a_final_one_needs_a_series():
    with pytest.raises(Refused) as refused:
        check_set(IN_PROGRESS, set_modifications("DONE"), {})
    assert refused.value.status == 0x0106
    with pytest.raises(Refused) as refused:
        check_set(IN_PROGRESS, set_modifications(COMPLETED), {})
    assert refused.value.status == 0x0121 and refused.value.tags == (0x00400340,)
    assert check_set(IN_PROGRESS, set_modifications(COMPLETED, [performed_series()]), {}) == COMPLETED
    kept = {"00400340": {"vr": "SQ", "Value": [{}]}}  # the series came with an earlier message
    assert check_set(IN_PROGRESS, set_modifications(DISCONTINUED), kept) == DISCONTINUED
    assert check_set(IN_PROGRESS, set_modifications(), {}) is None


def test_what_is_accepted_is_bounded_before_it_is_parsed(monkeypatch):
    monkeypatch.setattr(mpps, "MAX_ATTRIBUTE_LIST_BYTES", 1000)
    with pytest.raises(Refused) as refused:
        read_list(message(None, "1.2.3", data=b"\x00" * 1001))
    assert refused.value.status == 0x0213
    ds = Dataset()
    inner = ds
    for _ in range(40):  # nested deeper than the engine accepts
        item = Dataset()
        inner.ContentSequence = Sequence([item])
        inner = item
    monkeypatch.setattr(mpps, "MAX_ATTRIBUTE_LIST_BYTES", 4 * 1024 * 1024)
    with pytest.raises(Refused, match="nested") as refused:
        read_list(message(ds, "1.2.3"))
    assert refused.value.status == 0x0110
    with pytest.raises(Refused, match="unreadable") as refused:  # explicit VR, and a VR that is none
        read_list(Message("MODALITY", "ORTHANC", None, MPPS_SOP_CLASS, "1.2.3", b"\x10\x00\x10\x00ZZ\x03\x00Doe",
                          implicit=False))
    assert refused.value.status == 0x0110 and "Doe" not in refused.value.reason


def test_callers_are_admitted_as_dicom_modalities_say():
    modalities = {"ct": {"AET": "MODALITY", "Host": "127.0.0.1", "Port": 104},
                  "far": {"AET": "FAR", "Host": "10.0.0.9", "Port": 104}}
    assert admitted("MODALITY", "127.0.0.1", modalities, check_host=True)
    assert admitted("modality ", "10.1.1.1", modalities, check_host=False)  # Orthanc's AE comparison
    assert not admitted("modality", "127.0.0.1", modalities, check_host=True, strict=True)
    assert not admitted("FAR", "127.0.0.1", modalities, check_host=True)
    assert not admitted("STRANGER", "127.0.0.1", modalities, check_host=False)


# -- the exchange over a real store and service -----------------------------------------------

RULES = """
- name: research-create
  dimse: N_CREATE_RQ
  role: SCU
  sending-aet: [RESEARCH]
  uri: "deidentify:RetainPatientIDHashOption"
- name: to-ris
  dimse: N_CREATE_RQ
  role: SCU
  sending-aet: [MODALITY, RESEARCH]
  forward: {to: [ris, RIS_ANON], when: received, retries: 2, retry-interval: 5}
- name: ris-anon-create
  dimse: N_CREATE_RQ
  role: SCP
  receiving-aet: [RIS_ANON]
  uri: "deidentify:"
- name: broken
  dimse: N_CREATE_RQ
  role: SCU
  sending-aet: [BROKEN]
  uri: "deidentify:"
"""


class Worklists:
    def __init__(self):
        self.calls = []

    def step_performed(self, steps, status):
        self.calls.append((copy.deepcopy(steps), status))


def _site(tmp_path, mpps_database=None, password_file=None):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "site.yaml").write_text(textwrap.dedent(RULES))
    coercion = {"RulesDirectory": str(rules), "LinkageDatabase": str(tmp_path / "var" / "linkage.sqlite")}
    if mpps_database:
        coercion.update(MppsDatabase=mpps_database, DatabasePasswordFile=password_file)
    settings = Settings.from_configuration({"Coercion": coercion}, {"COERCION_SECRET": SECRET.decode()})
    return Site(tmp_path, CoercionService(settings))


@pytest.fixture
def site(tmp_path, store_location):
    """The MPPS SCP over a store on each backend."""
    location, password = store_location
    return _site(tmp_path, None if password is None else location, password)


@pytest.fixture
def sqlite_site(tmp_path):
    return _site(tmp_path)


class Site:
    def __init__(self, root, service):
        self.root, self.service = root, service
        self.armed, self.audits, self.warnings = [], [], []
        self.worklists = Worklists()
        self.open()

    def open(self):
        """The SCP as start-up builds it (again after a restart: only the store remembers)."""
        settings = self.service.settings
        self.store = open_mpps_store(settings.mpps_database, self.service.keys, settings.database_password_file)
        self.exchange = MppsExchange(self.service, self.store, arm=lambda *a: self.armed.append(a),
                                     resolve=lambda d: {"RIS_ANON": "ris-anon"}.get(d, d),
                                     worklists=lambda: self.worklists, audit=self.audits.append,
                                     warn=self.warnings.append)

    def restart(self):
        self.store.close()
        self.open()


def test_the_mpps_database_is_beside_the_linkage_database_by_default(sqlite_site):
    site = sqlite_site
    assert site.service.settings.mpps_database == str(site.root / "var" / "mpps.sqlite")
    settings = Settings.from_configuration({"Coercion": {"RulesDirectory": "r", "MppsDatabase": "/x/m.sqlite"}},
                                           {"COERCION_SECRET": SECRET.decode()})
    assert settings.mpps_database == "/x/m.sqlite"


def test_a_step_is_kept_in_progress_then_completed_and_then_refused(site):
    uid = new_uid()
    answer = site.exchange.n_create(message(create_attributes(), uid))
    assert answer.ok and answer.uid == uid
    (step,) = site.store.steps()
    assert (step.uid, step.status, step.calling_aet, step.rule, step.messages) == (uid, IN_PROGRESS, "MODALITY",
                                                                                   None, 1)
    assert site.exchange.n_set(message(set_modifications(series=[performed_series(3)], end=False), uid)).ok
    assert site.store.get(uid).step.instances == 3
    answer = site.exchange.n_set(message(set_modifications(COMPLETED, [performed_series(2), performed_series(1)]), uid))
    assert answer.ok
    kept = site.store.get(uid)
    assert (kept.step.status, kept.step.series, kept.step.instances, kept.step.messages) == (COMPLETED, 2, 3, 3)
    assert kept.dataset["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]  # not coerced: as received
    assert kept.dataset["00400250"]["Value"] == ["20241101"]
    refused = site.exchange.n_set(message(set_modifications(COMPLETED), uid))
    assert (refused.status, refused.error_id) == (0x0110, 0xA710)
    assert site.store.get(uid) == kept  # nothing kept is lost
    assert [m[1] for m in site.store.messages(uid)] == ["N-CREATE", "N-SET", "N-SET"]


def test_protocol_errors_keep_nothing_and_lose_nothing(site):
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid)).ok
    kept = site.store.get(uid)
    duplicate = site.exchange.n_create(message(create_attributes(patient_name="Other^Patient"), uid))
    assert duplicate.status == 0x0111
    assert site.exchange.n_set(message(set_modifications(), new_uid())).status == 0x0112
    assert site.exchange.n_set(message(set_modifications(PatientID="X"), uid)).status == 0x0105
    assert site.exchange.n_set(message(set_modifications("PAUSED"), uid)).status == 0x0106
    assert site.exchange.n_create(message(create_attributes(status=COMPLETED), new_uid())).status == 0x0106
    assert site.exchange.n_create(message(create_attributes(), uid, sop_class="1.2.3")).status == 0x0118
    assert site.exchange.n_create(message(create_attributes(), "1.02.x")).status == 0x0117
    assert site.store.get(uid) == kept and len(site.store.steps()) == 1
    assert all("Doe" not in json.dumps(a) and "Other" not in json.dumps(a) for a in site.audits)


def test_an_n_create_without_a_uid_gets_one_from_the_scp(site):
    answer = site.exchange.n_create(message(create_attributes(), None))
    assert answer.ok and answer.created_uid and site.store.get(answer.created_uid)


def test_a_restart_between_n_create_and_n_set_finds_the_step_in_the_store(site):
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid)).ok
    site.restart()
    assert site.exchange.n_set(message(set_modifications(COMPLETED, [performed_series()]), uid)).ok
    assert site.store.get(uid).step.status == COMPLETED


def test_each_message_is_coerced_per_calling_ae_title_before_it_is_kept(site):
    plain, coerced = new_uid(), new_uid()
    assert site.exchange.n_create(message(create_attributes(), plain, calling="MODALITY")).ok
    answer = site.exchange.n_create(message(create_attributes(patient_name="Roe^Rita"), coerced, calling="RESEARCH"))
    assert answer.ok and answer.uid == KEYS.uid(coerced)  # the step's UID goes through the profile too
    kept = site.store.get(KEYS.uid(coerced))
    assert kept.step.rule == "research-create" and site.store.get(coerced) is None
    text = json.dumps(kept.dataset)
    assert "Roe" not in text and "MRN-1" not in text and "ACC-1" not in text
    assert kept.dataset["00100020"]["Value"] == [KEYS.patient_id("MRN-1")]
    assert kept.dataset["00120062"]["Value"] == ["YES"]  # Patient Identity Removed
    # Type 1 attributes the profile removes keep a dummy: what is kept and forwarded stays valid
    assert kept.dataset["00400253"]["Value"] == ["ANONYMIZED"] and kept.dataset["00400244"]["Value"] == ["19000101"]
    assert site.service.linkage(KEYS.patient_id("MRN-1"))[0]["rule"] == "research-create"
    assert site.service.stats()["research-create"]["coerced"] == 1
    # The N-SET has no rule of its own: the N-CREATE's coerces it (a step never mixes worlds),
    # and the peer names the step by the UID it chose.
    series = performed_series(operator="Tech^Tina")
    assert site.exchange.n_set(message(set_modifications(COMPLETED, [series]), coerced, calling="RESEARCH")).ok
    kept = site.store.get(KEYS.uid(coerced))
    assert kept.step.set_rule == "research-create" and "Tina" not in json.dumps(kept.dataset)
    kept_series = kept.dataset["00400340"]["Value"][0]["0020000E"]["Value"]
    assert kept_series == [KEYS.uid(series.SeriesInstanceUID)]
    assert "Doe" in json.dumps(site.store.get(plain).dataset)  # the other caller's: as received


def test_a_failed_coercion_is_refused_and_keeps_nothing(site):
    ds = create_attributes()
    ds.DirectoryRecordSequence = Sequence([Dataset()])  # the engine refuses a DICOMDIR
    answer = site.exchange.n_create(message(ds, new_uid(), calling="BROKEN"))
    assert answer.status == 0x0110 and answer.comment == "coercion failed"
    assert site.store.steps() == [] and site.armed == []
    assert site.service.stats()["broken"]["rejected"] == 1
    assert site.audits[-1]["outcome"] == "refused" and "rule 'broken'" in site.audits[-1]["reason"]


def test_a_coerced_step_whose_rule_is_gone_refuses_n_sets_rather_than_keep_them_as_received(site):
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid, calling="RESEARCH")).ok
    (site.root / "rules" / "site.yaml").write_text(textwrap.dedent(RULES).replace("research-create", "renamed"))
    site.service.reload()
    answer = site.exchange.n_set(message(set_modifications(series=[performed_series()]), uid, calling="RESEARCH"))
    assert answer.status == 0x0110 and site.store.get(KEYS.uid(uid)).step.messages == 1


def test_only_the_ae_title_that_created_a_step_may_n_set_it(site):
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid, calling="MODALITY")).ok
    kept, armed, performed = site.store.get(uid), list(site.armed), copy.deepcopy(site.worklists.calls)
    for calling in ("OTHER", "RESEARCH", "modalit"):  # another caller (one a rule coerces too)
        done = set_modifications(COMPLETED, [performed_series()], PerformedProcedureStepDescription="Other^Olga")
        refused = site.exchange.n_set(message(done, uid, calling=calling))
        assert (refused.status, refused.comment) == (mpps.NOT_AUTHORIZED, "not the AE title that created the step")
        audit = site.audits[-1]
        assert (audit["dimse"], audit["calling_aet"], audit["status"], audit["outcome"]) == (
            "N-SET", calling, "0x0124", "refused")
        assert "'MODALITY'" in audit["reason"] and "Olga" not in json.dumps(audit)
    # Nothing changed: not the step, not its messages, not the forwards, not the worklist.
    assert site.store.get(uid) == kept and len(site.store.messages(uid)) == 1
    assert site.armed == armed and site.worklists.calls == performed
    assert "research-create" not in site.service.stats()
    # The creator, as Orthanc compares AE titles: padding and (not strict) letter case do not matter.
    assert site.exchange.n_set(message(set_modifications(series=[performed_series()], end=False), uid,
                                       calling="modality")).ok
    assert site.exchange.n_set(message(set_modifications(COMPLETED), uid, calling=" MODALITY  ")).ok
    assert site.store.get(uid).step.status == COMPLETED and len(site.store.messages(uid)) == 3


def test_with_strict_aet_comparison_letter_case_names_another_caller(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "site.yaml").write_text(textwrap.dedent(RULES))
    config = {"StrictAetComparison": True,
              "Coercion": {"RulesDirectory": str(rules), "LinkageDatabase": str(tmp_path / "var" / "linkage.sqlite")}}
    site = Site(tmp_path, CoercionService(Settings.from_configuration(config, {"COERCION_SECRET": SECRET.decode()})))
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid, calling="MODALITY")).ok
    assert site.exchange.n_set(message(set_modifications(), uid, calling="modality")).status == 0x0124
    assert site.exchange.n_set(message(set_modifications(), uid, calling="MODALITY ")).ok  # padding still
    assert site.store.get(uid).step.messages == 2


def test_ae_titles_are_compared_as_orthanc_compares_them_names_exactly():
    modalities = {"backup": {"AET": "RIS"}, "ris": {"AET": "RIS_MAIN"}, "pacs": {"AET": " PACS "}}
    assert mpps.find_modality(modalities, "ris")[0] == "ris"  # its name, not another's AE title in other case
    assert mpps.find_modality(modalities, "RIS")[0] == "backup"
    assert mpps.find_modality(modalities, "Ris_Main")[0] == "ris"
    assert mpps.find_modality(modalities, "PACS")[0] == "pacs"
    assert mpps.find_modality(modalities, "Pacs", strict=True) is None
    assert mpps.find_modality(modalities, "PACS", strict=True)[0] == "pacs"  # padding is never significant
    assert mpps.find_modality(modalities, "Backup") is None  # a symbolic name is exact
    assert admitted("pacs", None, modalities, check_host=False)
    assert admitted("PACS", None, modalities, check_host=False, strict=True)
    assert not admitted("Pacs", None, modalities, check_host=False, strict=True)


def test_the_worklist_follows_with_the_steps_as_the_peer_named_them(site):
    uid = new_uid()
    study = f"2.25.{uuid.uuid4().int}"
    ds = create_attributes(study_uid=study, accession="ACC-9", step_id="SPS-9", requested="RP-9")
    assert site.exchange.n_create(message(ds, uid, calling="RESEARCH")).ok  # coerced: the worklist gets originals
    assert site.exchange.n_set(message(set_modifications(series=[performed_series()]), uid, calling="RESEARCH")).ok
    assert site.exchange.n_set(message(set_modifications(DISCONTINUED), uid, calling="RESEARCH")).ok
    steps = [{"StudyInstanceUID": study, "AccessionNumber": "ACC-9", "RequestedProcedureID": "RP-9",
              "ScheduledProcedureStepID": "SPS-9"}]
    assert site.worklists.calls == [(steps, IN_PROGRESS), (steps, DISCONTINUED)]


def test_a_failing_worklist_does_not_fail_the_mpps(site):
    class Broken:
        def step_performed(self, steps, status):
            raise OSError("disk full")

    site.exchange.worklists = lambda: Broken()
    assert site.exchange.n_create(message(create_attributes(), new_uid())).ok
    assert "worklist" in site.warnings[0]


def test_the_store_is_sealed_and_owner_only(sqlite_site):
    site = sqlite_site
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(patient_name="Sealed^Susan", patient_id="MRN-77"),
                                          uid)).ok
    site.store.close()
    path = site.root / "var" / "mpps.sqlite"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in path.parent.glob("mpps.sqlite*"))
    assert b"Sealed" not in raw and b"MRN-77" not in raw and b"ACC-1" not in raw and uid.encode() in raw
    with pytest.raises(StoreError, match="another secret"):
        open_mpps_store(path, Keys(OTHER_SECRET))
    store = open_mpps_store(path, KEYS)
    assert store.get(uid).dataset["00100020"]["Value"] == ["MRN-77"]
    with pytest.raises(DuplicateStep):
        store.create(uid, Kept(Step(new_uid(), IN_PROGRESS, "X"), {}, []))


# -- forwards -----------------------------------------------------------------------------------


class Peer:
    """A destination: records what it is sent; ``down`` fails the connection; ``statuses``
    answers given instead of Success."""

    def __init__(self):
        self.received, self.down, self.statuses = [], False, []

    def send(self, outgoing):
        if self.down:
            raise ConnectionError("the peer could not be reached")
        self.received.append((outgoing.kind, outgoing.uid, outgoing.dataset))
        return self.statuses.pop(0) if self.statuses else 0


RIS = {"AET": "RIS", "Host": "127.0.0.1", "Port": 11112}
RIS_ANON = {"AET": "RIS_ANON", "Host": "127.0.0.1", "Port": 11113}


def test_a_step_is_forwarded_in_order_each_message_coerced_for_its_destination(site):
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid)).ok
    assert [a[:3] for a in site.armed] == [("to-ris", "ris", uid), ("to-ris", "ris-anon", uid)]
    assert site.armed[0][3:] == (2, 5)  # the route's retries and interval
    assert site.exchange.n_set(message(set_modifications(series=[performed_series()]), uid)).ok
    assert site.exchange.n_set(message(set_modifications(COMPLETED), uid)).ok
    ris, anon = Peer(), Peer()
    assert site.exchange.forward(uid, "ris", RIS, "ORTHANC", ris.send).ok
    assert [(k, u) for k, u, _ in ris.received] == [("N-CREATE", uid), ("N-SET", uid), ("N-SET", uid)]
    assert ris.received[0][2].PatientName == "Doe^Jane"  # no rule for role SCP of RIS: as kept
    assert site.exchange.forward(uid, "ris-anon", RIS_ANON, "ORTHANC", anon.send).ok
    assert anon.received[0][1] == KEYS.uid(uid) and not anon.received[0][2].get("PatientName")
    assert [u for _, u, _ in anon.received] == [KEYS.uid(uid)] * 3  # the N-SETs name the UID the peer was given
    assert site.service.stats()["ris-anon-create"]["coerced"] == 3  # its N-SETs too, by the N-CREATE's rule
    # Everything was delivered: nothing is sent twice, after a restart neither.
    site.restart()
    assert site.exchange.forward(uid, "ris", RIS, "ORTHANC", ris.send).ok and len(ris.received) == 3


def test_a_failed_attempt_sends_nothing_twice_and_the_next_one_goes_on(site):
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid)).ok
    ris = Peer()
    ris.down = True
    failed = site.exchange.forward(uid, "ris", RIS, "ORTHANC", ris.send)
    assert not failed.ok and failed.retry and "could not be reached" in failed.reason
    ris.down = False
    ris.statuses = [0x0000, 0x0213]  # the N-CREATE passes, the first N-SET is refused
    assert site.exchange.n_set(message(set_modifications(series=[performed_series()]), uid)).ok
    refused = site.exchange.forward(uid, "ris", RIS, "ORTHANC", ris.send)
    assert not refused.ok and "0x0213" in refused.reason and refused.sent == 1
    site.restart()
    assert site.exchange.forward(uid, "ris", RIS, "ORTHANC", ris.send).ok
    assert [k for k, _, _ in ris.received] == ["N-CREATE", "N-SET", "N-SET"]  # the refused one, again


def test_a_message_that_may_have_reached_the_peer_counts_as_delivered_when_the_peer_has_it(site):
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid)).ok
    assert site.exchange.n_set(message(set_modifications(COMPLETED, [performed_series()]), uid)).ok
    site.store.sending(uid, "ris", 0)  # Orthanc stopped while the N-CREATE was on its way
    ris = Peer()
    ris.statuses = [0x0111, 0x0110]  # the peer has it; then the final N-SET is refused...
    result = site.exchange.forward(uid, "ris", RIS, "ORTHANC", ris.send)
    assert not result.ok and result.sent == 1  # ...and that one was never sent before: a real failure
    site.store.sending(uid, "ris", 1)
    ris.statuses = [0x0110]  # sent before, no answer: "may no longer be updated" means it arrived
    assert site.exchange.forward(uid, "ris", RIS, "ORTHANC", ris.send).ok
    assert site.store.deliveries(uid)[0].delivered == 2


def test_forwards_lost_between_keeping_and_queueing_are_queued_at_start_up(site):
    uid = new_uid()
    site.exchange.arm = lambda *a: (_ for _ in ()).throw(OSError("queue unavailable"))
    assert site.exchange.n_create(message(create_attributes(), uid)).ok  # kept all the same
    assert "could not be queued" in site.warnings[0]
    site.restart()
    assert site.exchange.queue_unqueued() == 2
    assert sorted(a[1] for a in site.armed) == ["ris", "ris-anon"]
    assert site.exchange.queue_unqueued() == 0


def test_a_forward_to_a_destination_the_step_has_no_delivery_for_fails_for_good(site):
    uid = new_uid()
    assert site.exchange.n_create(message(create_attributes(), uid, calling="OTHER")).ok  # no route for OTHER
    result = site.exchange.forward(uid, "ris", RIS, "ORTHANC", Peer().send)
    assert not result.ok and not result.retry
    assert site.store.deliveries(uid) == []


def test_deliveries_show_no_patient_data():
    assert Delivery("1.2.3", "ris", "to-ris", 2, None, "2.25.1", "r").as_dict() == {
        "destination": "ris", "route": "to-ris", "delivered": 2}


# -- rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message_", [
    ("- {name: r, dimse: N_CREATE_RQ, role: SCU, forward: {to: [X], when: stable-study}}",
     "field 'forward.when' must be received on a rule for N_CREATE_RQ"),
    ("- {name: r, dimse: N_CREATE_RQ, role: SCU, forward: {to: [X]}}", "must be received"),
    ("- {name: r, dimse: N_SET_RQ, role: SCU, forward: {to: [X], when: received}}", "only rules for C_STORE_RQ or "
                                                                                    "N_CREATE_RQ with role SCU"),
    ("- {name: r, dimse: N_CREATE_RQ, role: SCP, forward: {to: [X], when: received}}", "only rules for"),
])
def test_mpps_routes_forward_each_message_as_received(tmp_path, text, message_):
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RuleError, match=message_):
        load_rules(tmp_path)


def test_an_mpps_route_loads(tmp_path):
    (tmp_path / "r.yaml").write_text("- {name: r, dimse: N_CREATE_RQ, role: SCU, forward: {to: [RIS], when: received}}")
    (route,) = load_rules(tmp_path).routes
    assert route.forward.when == "received"


def test_a_relative_mpps_database_is_resolved_against_the_folder_of_orthanc_json(tmp_path):
    from argparse import Namespace

    from coercion.serve import effective_configuration

    (tmp_path / "orthanc.json").write_text(json.dumps({"Coercion": {"MppsDatabase": "var/mpps.sqlite"},
                                                       "Worklists": {"Enable": True, "Database": "var/wl"}}))
    config = effective_configuration(Namespace(config=str(tmp_path / "orthanc.json")), {})
    assert config["Coercion"]["MppsDatabase"] == str(tmp_path / "var" / "mpps.sqlite")
    assert config["Worklists"]["Database"] == str(tmp_path / "var" / "wl")
