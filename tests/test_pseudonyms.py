import hashlib
import hmac
import subprocess
import sys
import uuid

import pytest

from coercion import Keys, SecretError
from coercion.engine.pseudonyms import MIN_SECRET_BYTES

from factory import OTHER_SECRET, SECRET


def test_uid_is_2_25_and_the_first_128_bits_of_the_hmac():
    original = "1.2.840.113619.2.55.3.604688119.971.1097230442.1"
    expected = int.from_bytes(hmac.new(SECRET, original.encode(), hashlib.sha256).digest()[:16], "big")
    assert Keys(SECRET).uid(original) == f"2.25.{expected}"
    assert len(Keys(SECRET).uid(original)) <= 64


def test_uid_ignores_padding():
    assert Keys(SECRET).uid("1.2.3\x00") == Keys(SECRET).uid("1.2.3")


def test_a_different_secret_gives_different_pseudonyms():
    a, b = Keys(SECRET), Keys(OTHER_SECRET)
    assert a.uid("1.2.3") != b.uid("1.2.3")
    assert a.patient_id("123") != b.patient_id("123")
    shifts_a = [a.date_shift_days(str(i)) for i in range(50)]
    shifts_b = [b.date_shift_days(str(i)) for i in range(50)]
    assert shifts_a != shifts_b


def test_patient_id_hash_fits_lo_and_depends_on_issuer():
    keys = Keys(SECRET)
    pid = keys.patient_id("1234567", "HOSP_A")
    assert len(pid) <= 64 and pid.isalnum()
    assert pid == keys.patient_id("1234567", "HOSP_A")
    assert pid != keys.patient_id("1234567", "HOSP_B")
    assert pid != keys.patient_id("1234568", "HOSP_A")


def test_patient_id_hash_cannot_be_recomputed_without_the_secret():
    # dcm4che's name-based UUID is a function of the ID alone: anybody can enumerate all
    # 7-digit record numbers and invert it. Ours is keyed: the unkeyed candidates never match.
    keys = Keys(SECRET)
    target = keys.patient_id("0012345")
    for mrn in ("0012345", "12345"):
        assert target != str(uuid.uuid3(uuid.NAMESPACE_OID, mrn))
        assert target != hashlib.sha256(mrn.encode()).hexdigest()[: len(target)]
    assert target != Keys(OTHER_SECRET).patient_id("0012345")


@pytest.mark.parametrize("window", [(-10, 10), (1, 5), (-5, -1), (0, 3), (-3, 0)])
def test_date_shift_stays_in_the_window_and_is_never_zero(window):
    keys = Keys(SECRET, date_shift_window=window)
    shifts = {keys.date_shift_days(f"P{i}") for i in range(400)}
    assert 0 not in shifts
    assert min(shifts) >= window[0] and max(shifts) <= window[1]
    assert len(shifts) == (window[1] - window[0] + 1) - (1 if window[0] <= 0 <= window[1] else 0)


def test_date_shift_is_per_patient():
    keys = Keys(SECRET)
    assert keys.date_shift_days("A") == keys.date_shift_days("A")
    assert len({keys.date_shift_days(f"P{i}") for i in range(20)}) > 1


def test_short_or_missing_secrets_are_refused(tmp_path):
    with pytest.raises(SecretError, match=f"at least {MIN_SECRET_BYTES}"):
        Keys(b"short")
    with pytest.raises(SecretError, match="does not exist"):
        Keys.from_file(tmp_path / "nope")
    with pytest.raises(SecretError, match="no site secret"):
        Keys.from_env({})
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31 + b"\n")
    with pytest.raises(SecretError, match="short.key"):
        Keys.from_file(short)


def test_secret_from_file_and_environment(tmp_path):
    path = tmp_path / "site.key"
    path.write_bytes(SECRET + b"\n")
    assert Keys.from_file(path).uid("1.2.3") == Keys(SECRET).uid("1.2.3")
    assert Keys.from_env({"COERCION_SECRET_FILE": str(path)}).secret == SECRET
    assert Keys.from_env({"COERCION_SECRET": SECRET.decode()}).secret == SECRET


def test_secret_never_appears_in_repr_or_errors():
    keys = Keys(SECRET)
    assert SECRET.decode() not in repr(keys)
    with pytest.raises(SecretError) as info:
        Keys(SECRET[:10])
    assert SECRET[:10].decode() not in str(info.value)


def test_pseudonyms_are_the_same_in_another_process():
    code = (
        "from coercion import Keys; k = Keys(%r); "
        "print(k.uid('1.2.3.4'), k.patient_id('77', 'X'), k.date_shift_days('77', 'X'))" % SECRET
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    keys = Keys(SECRET)
    assert out == [keys.uid("1.2.3.4"), keys.patient_id("77", "X"), str(keys.date_shift_days("77", "X"))]
