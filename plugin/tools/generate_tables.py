"""Generate the project's copies of the DICOM PS3.15 tables in ``plugin/coercion/engine/tables/``.

Sources (never copied as they are; this script derives our own format from them):

* PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes), as parsed
  from the standard by the innolitics dicom-standard project:
  ``../shared/reference/ps3.15-table-e1-1.json``.
* PS3.15 Table E.3.10-1 (Safe Private Attributes):
  ``../shared/reference/ps3.15-table-e3.10-1-safe-private.json``.
* Keywords and CID 7050 codes come from pydicom's data dictionary, itself generated from
  PS3.6 and PS3.16.
* Attribute types per IOD come from the PS3.3 module tables that highdicom ships
  (``highdicom/_standard``): the type of every attribute whose action depends on it (those
  the table removes or empties, compound codes such as X/Z/D, and text a cleaning may
  empty; which of them are conditional, 1C or 2C), at the top level and inside sequences (Graphic Annotation, Content Sequence items
  at any depth...), so that the engine keeps an instance valid for its IOD (PS3.15 E.1.1,
  item 2, note 1: dummy values for Type 1 attributes that are protected).

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

from pydicom.datadict import (
    RepeatersDictionary,
    dictionary_VR,
    keyword_for_tag,
    tag_for_keyword,
)
from pydicom.sr.codedict import codes

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "plugin" / "coercion" / "engine" / "tables"  # package data (pyproject.toml)
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


# The cleanings that edit text (and may leave a value empty); a date shift never does.
TEXT_CLEANING_OPTIONS = {
    "CleanDescriptorsOption", "CleanStructuredContentOption", "CleanGraphicsOption",
    "RetainPatientCharacteristicsOption", "RetainDeviceIdentityOption",
}
TEXT_VRS = {"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
CODE_TAGS = range(0x00080100, 0x00080123)  # coded entries: never cleaned, never emptied
TYPE_LEVEL = {"1": 1, "1C": 1, "2": 2, "2C": 2, "3": 3}
SR_CONTENT_MODULE = "sr-document-content"
SR_CONTENT_SEQUENCE = "ContentSequence"


def _vr(keyword: str) -> str | None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _collapse(path: list[str]) -> list[str]:
    """A path through a recursive sequence (a Content Sequence inside a Content Sequence
    item) as the path to the outermost one: the items at every depth are of one kind."""
    out: list[str] = []
    for keyword in path:
        if keyword in out:
            out = out[: out.index(keyword) + 1]
        else:
            out.append(keyword)
    return out


def _typed_keywords(profile: dict) -> tuple[set[str], set[str]]:
    """The attributes whose type in the IOD decides their action (X, Z and the compound
    codes can become a dummy or an empty value; a text cleaning can leave a value empty),
    and the sequences whose items are cleaned as text."""
    typed, cleaned_sequences = set(), set()
    for row in profile["rows"]:
        keyword = row["keyword"]
        if not keyword:
            continue
        actions = {row["basic"], *row["options"].values()}
        text_cleaned = any(o in TEXT_CLEANING_OPTIONS and a == "C" for o, a in row["options"].items())
        if actions & ({"X", "Z"} | COMPOUND) or text_cleaned:
            typed.add(keyword)
        if "C" in row["options"].values() and _vr(keyword) == "SQ":
            cleaned_sequences.add(keyword)
    return typed, cleaned_sequences


def _module_tree(attributes: list[dict], typed: set[str], cleaned_sequences: set[str]) -> dict:
    """One module's attributes that need their type, nested by the sequences they are in.

    A leaf is its type (1 or 2; conditional types count as required, the safe side for
    validity); a sequence on the way to one is ``[type, {items}]`` (type 3 allowed), and a
    sequence nested in an item of the same sequence is ``[type, "^"]``: its items are those
    of the enclosing one.
    """
    sequence_type: dict[tuple, int] = {}
    for attr in attributes:
        key = tuple(_collapse(attr["path"] + [attr["keyword"]]))
        sequence_type[key] = min(TYPE_LEVEL.get(attr["type"], 3), sequence_type.get(key, 3))
    tree: dict = {}
    for attr in attributes:
        path, keyword = _collapse(attr["path"]), attr["keyword"]
        level = TYPE_LEVEL.get(attr["type"], 3)
        recursive = keyword in path
        if not recursive:
            if level == 3:
                continue
            text = (_vr(keyword) in TEXT_VRS and tag_for_keyword(keyword) not in CODE_TAGS
                    and level == 1 and any(p in cleaned_sequences for p in path))
            if keyword not in typed and not text:
                continue
        node = tree
        for depth, sequence in enumerate(path):
            entry = node.get(sequence)
            own = sequence_type.get(tuple(path[: depth + 1]), 3)
            if not isinstance(entry, list):
                entry = node[sequence] = [min(own, entry or 3), {}]
            if entry[1] == "^":
                break  # already known to recurse
            node = entry[1]
        else:
            current = node.get(keyword)
            if recursive:
                node[keyword] = [min(level, current[0] if isinstance(current, list) else current or 3), "^"]
            elif isinstance(current, list):
                current[0] = min(current[0], level)
            else:
                node[keyword] = min(level, current or 3)
    return tree


def _in_tree(tree: dict, path: list[str]) -> bool:
    node = tree
    for sequence in path[:-1]:
        entry = node.get(sequence)
        if not isinstance(entry, list) or not isinstance(entry[1], dict):
            return False
        node = entry[1]
    return path[-1] in node


def _conditional(attributes: list[dict], tree: dict) -> list[str]:
    """The attributes of a module's tree whose type is conditional (1C, 2C) wherever the module
    defines them, as paths of keywords joined by ">" (collapsed as the tree is)."""
    kinds: dict[str, set[bool]] = {}
    for attr in attributes:
        if attr["type"] in ("1", "1C", "2", "2C"):
            key = ">".join(_collapse(attr["path"] + [attr["keyword"]]))
            kinds.setdefault(key, set()).add(attr["type"].endswith("C"))
    return sorted(key for key, conditional in kinds.items()
                  if conditional == {True} and _in_tree(tree, key.split(">")))


def build_iod_types(source: Path, profile: dict) -> dict:
    """For each module, the type of each attribute whose action depends on it, at the top
    level and inside sequences; for each IOD, its modules; for each SOP Class, its IOD."""
    typed, cleaned_sequences = _typed_keywords(profile)
    iod_modules = json.loads((source / "iod_module_map.json").read_text())
    module_attrs = json.loads((source / "module_attribute_map.json").read_text())
    sop_iod = json.loads((source / "sop_class_iod_map.json").read_text())
    modules, conditional = {}, {}
    for key, attributes in module_attrs.items():
        attributes = list(attributes)
        if key == SR_CONTENT_MODULE:
            # The module describes the root content item; every item of its Content Sequence,
            # at any depth, is a content item of the same macros (PS3.3 C.17.3).
            attributes += [dict(a, path=[SR_CONTENT_SEQUENCE] + a["path"]) for a in attributes]
        tree = _module_tree(attributes, typed, cleaned_sequences)
        if tree:
            modules[key] = tree
            if _conditional(attributes, tree):
                conditional[key] = _conditional(attributes, tree)
    iods = {iod: [m["key"] for m in mods if m["key"] in modules] for iod, mods in iod_modules.items()}
    return {
        "source": "DICOM PS3.3 module tables as shipped by highdicom (highdicom/_standard)",
        "format": "modules: {module: {keyword: type | [type, items | \"^\"]}}; type 1 includes 1C, "
                  "2 includes 2C, 3 only for a sequence on the way; \"^\": the items of the "
                  "enclosing sequence of that keyword. iods: {iod: [module...]}. conditional: "
                  "{module: [keyword path, joined by \">\", whose type is 1C or 2C there]}",
        "sop_classes": dict(sorted(sop_iod.items())),
        "iods": dict(sorted(iods.items())),
        "modules": dict(sorted(modules.items())),
        "conditional": dict(sorted(conditional.items())),
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


def _dump_iod_types(path: Path, iod: dict) -> None:
    # One SOP Class, IOD or module per line: a new edition's diff shows what changed.
    lines = ["{"]
    for key in ("source", "format"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(iod[key])},")
    sections = ("sop_classes", "iods", "modules", "conditional")
    for n, key in enumerate(sections):
        entries = [f"    {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in iod[key].items()]
        lines.append(f"  {json.dumps(key)}: {{")
        lines.append(",\n".join(entries))
        lines.append("  }" + ("," if n < len(sections) - 1 else ""))
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
    _dump_iod_types(OUT_DIR / "iod-attribute-types.json", iod)
    print(f"wrote {len(profile['rows'])} profile rows, {len(safe['rows'])} safe private rows, "
          f"{len(iod['iods'])} IODs to {OUT_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
