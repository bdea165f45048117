"""Dates: the keyed per-patient shift (RetainLongitudinalTemporalInformationModifiedDatesOption).

Every DA and DT the table marks moves by one whole number of days per patient (from the
keys), so the intervals between a patient's dates survive; times stay as they are.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from .profile import SHIFT_DATES
from .values import put, values_of, vr_of

if TYPE_CHECKING:
    from .context import Scope, Walk


def _shift_da(value: str, days: int) -> str | None:
    text = value.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return (date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def _shift_dt(value: str, days: int) -> str | None:
    text = value.strip()
    if len(text) < 8:
        return None  # a year or year-month alone cannot be shifted by days
    shifted = _shift_da(text[:8], days)
    return None if shifted is None else shifted + text[8:]


def shift_date_value(value: str, vr: str, days: int) -> str | None:
    """Shift one DA/DT value, or a range ``a-b`` of them (as C-FIND queries carry); None
    when it is not a date that can be shifted."""
    shift = _shift_da if vr == "DA" else _shift_dt
    if vr == "DA" and "-" in value:
        parts = value.split("-")
        if len(parts) != 2:
            return None
        out = [shift(p, days) if p.strip() else "" for p in parts]
        return None if None in out else "-".join(p for p in out if p is not None)
    return shift(value, days)


class DateShifter:
    """C for dates: shift DA and DT values; a value that is no date gets the basic action."""

    def __init__(self, walk: Walk) -> None:
        self.walk = walk

    def __call__(self, ds: Dataset, tag: int, keyword: str | None, scope: Scope) -> None:
        vr = vr_of(ds, tag)
        if vr == "TM":
            return  # a whole-day shift leaves times as they are, and every interval with them
        if vr not in ("DA", "DT"):
            self.walk.fallback(ds, tag, keyword, scope, SHIFT_DATES)
            return
        shifted = [shift_date_value(str(v), vr, scope.instance.date_shift) for v in values_of(ds[tag].value)]
        if None in shifted:
            self.walk.fallback(ds, tag, keyword, scope, SHIFT_DATES)
            return
        put(ds, tag, vr, shifted[0] if len(shifted) == 1 else (shifted or None))
