"""Generate the project's copies of the DICOM PS3.15 tables under ``rules/standard/``.

Sources (never copied as they are; this script derives our own format from them):

* PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes), as parsed
  from the standard by the innolitics dicom-standard project:
  ``../shared/reference/ps3.15-table-e1-1.json``.
* PS3.15 Table E.3.10-1 (Safe Private Attributes):
  ``../shared/reference/ps3.15-table-e3.10-1-safe-private.json``.
* Keywords and CID 7050 codes come from pydicom's data dictionary, itself generated from
  PS3.6 and PS3.16.
* Attribute types per IOD (to choose among the actions of a compound code such as X/Z/D)
  come from the PS3.3 module tables that highdicom ships (``highdicom/_standard``), for the
  compound-coded attributes at the top level of the dataset only.

Run from the repository root::

    python plugin/tools/generate_tables.py [--reference ../shared/reference] [--iod-source DIR]

``--iod-source`` is the folder holding highdicom's ``iod_module_map.json``,
``module_attribute_map.json`` and ``sop_class_iod_map.json``; without it the script looks
for an installed highdicom, or downloads its wheel with pip into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pydicom.datadict import RepeatersDictionary, keyword_for_tag
from pydicom.sr.codedict import codes

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "rules" / "standard"
PROFILE_EDITION = "2025"  # the edition the innolitics parse of Table E.1-1 comes from

# innolitics column -> the option's DICOM name (as used in deidentify: URIs and CID 7050)
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "RetainSafePrivateOption",
    "rtnUIDsOpt": "RetainUIDsOption",
    "rtnDevIdOpt": "RetainDeviceIdentityOption",
    "rtnInstIdOpt": "RetainInstitutionIdentityOption",
    "rtnPatCharsOpt": "RetainPatientCharacteristicsOption",
    "rtnLongFullDatesOpt": "RetainLongitudinalTemporalInformationFullDatesOption",
    "rtnLongModifDatesOpt": "RetainLongitudinalTemporalInformationModifiedDatesOption",
    "cleanDescOpt": "CleanDescriptorsOption",
    "cleanStructContOpt": "CleanStructuredContentOption",
    "cleanGraphOpt": "CleanGraphicsOption",
}
CID_7050_NAMES = [
    "BasicApplicationConfidentialityProfile",
    "CleanPixelDataOption",
    "CleanRecognizableVisualFeaturesOption",
    "CleanGraphicsOption",
    "CleanStructuredContentOption",
    "CleanDescriptorsOption",
    "RetainLongitudinalTemporalInformationFullDatesOption",
    "RetainLongitudinalTemporalInformationModifiedDatesOption",
    "RetainPatientCharacteristicsOption",
    "RetainDeviceIdentityOption",
    "RetainUIDsOption",
    "RetainSafePrivateOption",
    "RetainInstitutionIdentityOption",
]
ACTIONS = {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
COMPOUND = {"X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
TAG_RE = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")
PRIVATE_RULE = "(GGGG,EEEE) WHERE GGGG IS ODD"


def _code_for(name: str) -> dict[str, str]:
    # pydicom spells "UIDs" as "Uids" in its keywords
    for keyword in dir(codes.DCM):
        if keyword.lower() == name.lower():
            code = getattr(codes.DCM, keyword)
            return {"value": code.value, "scheme": code.scheme_designator, "meaning": code.meaning}
    raise SystemExit(f"CID 7050 code for {name} not found in pydicom's dictionary")


def _keyword(tag: str) -> str:
    group, element = TAG_RE.match(tag).groups()
    if "X" in group or "X" in element:
        key = (group + element).replace("X", "x")
        entry = RepeatersDictionary.get(key)
        if entry:
            return entry[4]
        # (50xx,xxxx): the whole curve group, no single keyword
        return {"50xxxxxx": "CurveData"}.get(key, "")
    return keyword_for_tag(int(group + element, 16)) or ""


def build_profile(reference: Path) -> dict:
    rows = json.loads((reference / "ps3.15-table-e1-1.json").read_text())
    out = []
    private_rule = None
    for row in rows:
        basic = row["basicProfile"]
        if basic not in ACTIONS:
            raise SystemExit(f"unknown action {basic!r} in row {row['name']}")
        options = {OPTION_COLUMNS[c]: row[c] for c in OPTION_COLUMNS if c in row}
        for option, action in options.items():
            if action not in ACTIONS:
                raise SystemExit(f"unknown action {action!r} for {option} in {row['name']}")
        if row["tag"] == PRIVATE_RULE:
            private_rule = {"name": row["name"], "basic": basic, "options": options}
            continue
        if not TAG_RE.match(row["tag"]):
            raise SystemExit(f"unexpected tag {row['tag']!r} in row {row['name']}")
        out.append(
            {
                "tag": row["tag"],
                "keyword": _keyword(row["tag"]),
                "name": row["name"],
                "in_standard_iod": row["stdCompIOD"] == "Y",
                "basic": basic,
                "options": options,
            }
        )
    if private_rule is None:
        raise SystemExit("the private attribute rule is missing from Table E.1-1")
    out.sort(key=lambda r: r["tag"])
    return {"rows": out, "private": private_rule}


def build_safe_private(reference: Path) -> dict:
    data = json.loads((reference / "ps3.15-table-e3.10-1-safe-private.json").read_text())
    seen = set()
    rows = []
    for row in data["rows"]:
        group = int(row["group"], 16)
        element = int(row["element"], 16)
        if group % 2 == 0 or not 0 <= element <= 0xFF:
            raise SystemExit(f"not a private attribute: {row}")
        key = (group, row["creator"], element)
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            {"group": f"{group:04X}", "creator": row["creator"], "element": f"{element:02X}",
             "vr": row["vr"], "meaning": row["meaning"]}
        )
    rows.sort(key=lambda r: (r["group"], r["creator"], r["element"]))
    return {"source": data["source"], "rows": rows}


def _iod_source(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    try:
        import highdicom  # type: ignore

        return Path(highdicom.__file__).parent / "_standard"
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="highdicom-"))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), "highdicom"],
        check=True,
    )
    wheel = next(tmp.glob("highdicom-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("highdicom/_standard/"):
                zf.extract(name, tmp)
    return tmp / "highdicom" / "_standard"


def build_iod_types(source: Path, profile: dict) -> dict:
    """For each SOP Class, the type (1, 2 or 3) of each compound-coded top-level attribute."""
    compound = {r["keyword"] for r in profile["rows"] if r["basic"] in COMPOUND and r["keyword"]}
    iod_modules = json.loads((source / "iod_module_map.json").read_text())
    module_attrs = json.loads((source / "module_attribute_map.json").read_text())
    sop_iod = json.loads((source / "sop_class_iod_map.json").read_text())
    strength = {"1": 1, "1C": 1, "2": 2, "2C": 2, "3": 3}
    per_iod: dict[str, dict[str, str]] = {}
    for iod, modules in iod_modules.items():
        types: dict[str, int] = {}
        for module in modules:
            for attr in module_attrs.get(module["key"], []):
                if attr["path"] or attr["keyword"] not in compound:
                    continue
                level = strength.get(attr["type"], 3)
                # Conditional types count as required: the safe side for validity.
                types[attr["keyword"]] = min(level, types.get(attr["keyword"], 3))
        per_iod[iod] = {k: str(v) for k, v in sorted(types.items()) if v < 3}
    return {
        "source": "DICOM PS3.3 module tables as shipped by highdicom (highdicom/_standard)",
        "sop_classes": dict(sorted(sop_iod.items())),
        "iods": dict(sorted(per_iod.items())),
    }


def _dump(path: Path, header: dict, rows_key: str, rows: list) -> None:
    # One row per line keeps diffs of a new edition readable.
    lines = ["{"]
    for key, value in header.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    lines.append(f"  {json.dumps(rows_key)}: [")
    lines.append(",\n".join("    " + json.dumps(r, ensure_ascii=False) for r in rows))
    lines.append("  ]")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=str(ROOT.parent / "shared" / "reference"))
    parser.add_argument("--iod-source", default=None)
    args = parser.parse_args(argv)
    reference = Path(args.reference)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    profile = build_profile(reference)
    _dump(
        OUT_DIR / "confidentiality-profile.json",
        {
            "table": "DICOM PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
            "edition": PROFILE_EDITION,
            "source": "innolitics/dicom-standard parse of PS3.15 (MIT licence)",
            "generated_by": "plugin/tools/generate_tables.py",
            "cid_7050": {name: _code_for(name) for name in CID_7050_NAMES},
            "private": profile["private"],
        },
        "rows",
        profile["rows"],
    )
    safe = build_safe_private(reference)
    _dump(
        OUT_DIR / "safe-private-attributes.json",
        {
            "table": "DICOM PS3.15 Table E.3.10-1 Safe Private Attributes",
            "edition": "2023b",
            "source": safe["source"],
            "generated_by": "plugin/tools/generate_tables.py",
        },
        "rows",
        safe["rows"],
    )
    iod = build_iod_types(_iod_source(args.iod_source), profile)
    (OUT_DIR / "iod-attribute-types.json").write_text(json.dumps(iod, indent=1) + "\n")
    print(f"wrote {len(profile['rows'])} profile rows, {len(safe['rows'])} safe private rows, "
          f"{len(iod['iods'])} IODs to {OUT_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
