"""Property: no value of an attribute the profile removes or replaces survives anywhere in the output."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from factory import deidentifier, encode

TABLES = Path(__file__).parents[1] / "plugin" / "coercion" / "engine" / "tables"  # the package's
TABLE = json.loads((TABLES / "confidentiality-profile.json").read_text())
STRING_VRS = {"LO", "SH", "PN", "LT", "ST", "UT", "UC", "AE", "CS", "DA", "DT", "UI"}
MAX_LENGTH = {"SH": 16, "AE": 16, "CS": 16, "LO": 64, "PN": 64, "UI": 64}


def _candidates():
    out = []
    for row in TABLE["rows"]:
        if "X" in row["tag"][1:] or row["tag"].startswith(("(0000", "(0002")) or row["basic"] == "K":
            continue
        tag = int(row["tag"][1:5] + row["tag"][6:10], 16)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr in STRING_VRS:
            out.append((tag, vr))
    return out


CANDIDATES = _candidates()
ROW_OPTIONS = {int(r["tag"][1:5] + r["tag"][6:10], 16): r["options"] for r in TABLE["rows"] if "X" not in r["tag"][1:]}


def replaced_under(tag: int, uri: str) -> bool:
    """Whether the URI removes or replaces the attribute (not kept, not cleaned in place)."""
    options = [o for o in uri.partition(":")[2].split(",") if o]
    return not any(o in ROW_OPTIONS[tag] for o in options)
# Text the output always holds (dummies, the method attributes): a generated value inside it
# would "survive" without leaking anything.
FIXED_OUTPUT = ("ANONYMIZED REMOVED YES Basic Application Confidentiality Profile DCM COERCION ISO_IR "
                "dcm4chee RetainPatientIDHashOption (keyed)").lower()


def not_fixed(value: str) -> bool:
    return value.lower() not in FIXED_OUTPUT


letters = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=8, max_size=16).filter(not_fixed)
upper = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=8, max_size=16).filter(not_fixed)
dates = st.dates().filter(lambda d: 1901 <= d.year <= 2099).map(lambda d: d.strftime("%Y%m%d"))
times = st.times().map(lambda t: t.strftime("%H%M%S"))
uids = st.lists(st.integers(1, 10**9), min_size=4, max_size=6).map(
    lambda parts: "1.2.826.0.1.3680043.8.498." + ".".join(map(str, parts))
)


def value_for(vr):
    if vr == "DA":
        return dates
    if vr == "DT":
        return st.tuples(dates, times).map("".join)
    if vr == "UI":
        return uids
    if vr in ("CS", "AE"):
        return upper
    if vr == "PN":
        return st.tuples(letters, letters).map("^".join)
    return letters


attribute = st.sampled_from(CANDIDATES).flatmap(
    lambda tv: st.tuples(st.just(tv[0]), st.just(tv[1]), value_for(tv[1]), st.booleans())
)
private_value = letters.map(lambda s: "PRIV" + s)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attributes=st.lists(attribute, min_size=1, max_size=25, unique_by=(lambda a: a[0], lambda a: a[2])),
       private=st.lists(private_value, max_size=3),
       uri=st.sampled_from(["deidentify:", "deidentify:RetainPatientIDHashOption",
                            "deidentify:CleanDescriptorsOption,CleanStructuredContentOption,CleanGraphicsOption"]))
def test_no_removed_or_replaced_value_survives(attributes, private, uri):
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.5"
    ds.Modality = "CT"
    nested = Dataset()
    originals = []
    for tag, vr, value, inside in attributes:
        (nested if inside else ds).add_new(tag, vr, value)
        if replaced_under(tag, uri):
            originals.append(value)
    if len(nested):
        ds.add_new(0x00409096, "SQ", Sequence([nested]))  # an unlisted sequence: kept, cleaned inside
    for i, value in enumerate(private):
        block = ds.private_block(0x0011 + 2 * i, "ACME PRIVATE", create=True)
        block.add_new(0x01, "LO", value)
        originals.append(value)
    ds.PixelData = b"\x00" * 8
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = 16
    out = deidentifier(uri).deidentify_bytes(encode(ds))
    for value in originals:
        assert value.encode("latin-1") not in out, value
    assert ds.SOPInstanceUID.encode() not in out
