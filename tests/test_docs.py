"""README.md is the front door and docs/ holds the rest: every relative link and anchor in them
resolves (as GitHub renders them), README.md stays short, each page says what it is for."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def outside_fences(text: str) -> list[str]:
    """The lines of Markdown outside fenced code blocks (those blank)."""
    kept, fence = [], None
    for line in text.split("\n"):
        marker = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if marker and (fence is None or marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence)):
            fence = None if fence else marker.group(1)
            kept.append("")
            continue
        kept.append("" if fence else line)
    return kept


def prose(text: str) -> str:
    """The Markdown outside code blocks and inline code spans (where links are links)."""
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "``", "\n".join(outside_fences(text)), flags=re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text without markup, lower case, punctuation but '-'
    and '_' removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings; GitHub numbers repeated ones: name, name-1, name-2..."""
    found, seen = set(), {}
    for line in outside_fences(path.read_text(encoding="utf-8")):
        if match := HEADING.match(line):
            base = slug(match.group(2))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def test_the_slugs_are_githubs():
    assert slug("The administrator's page") == "the-administrators-page"
    assert slug("De-identifying files: `coercion deidentify`") == "de-identifying-files-coercion-deidentify"
    assert slug("`deidentify:` URIs") == "deidentify-uris"
    assert slug("A peer queries Orthanc (role SCU)") == "a-peer-queries-orthanc-role-scu"
    assert slug("The REST API under /coercion") == "the-rest-api-under-coercion"
    assert slug("coercion — de-identifying attribute coercion") == "coercion--de-identifying-attribute-coercion"


def test_links_are_found_outside_code_only():
    text = "[a](x.md) `[b](y.md)` and\n```sh\n[c](z.md)\n```\n![d](e.png) [`f` g](h.md#i)"
    assert LINK.findall(prose(text)) == ["x.md", "e.png", "h.md#i"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    found = links(page)
    assert found, f"{page.name} links to nothing"
    broken = []
    for target in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path)).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no {resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved}")
            continue
        if anchor and resolved.suffix == ".md":
            if unquote(anchor) not in anchors(resolved):
                broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_stays_a_front_door():
    lines = README.read_text(encoding="utf-8").split("\n")
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move detail into docs/"
    text = "\n".join(lines)
    # the two commands, as tests/test_platforms.py and .ci/run run them
    assert "bash plugin/scripts/install-and-serve.sh   #" in text
    assert "bash plugin/scripts/test.sh                #" in text
    # every page of docs/ is reachable from it
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    assert not [doc.name for doc in DOCS if doc.resolve() not in linked]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_each_page_says_what_it_is_for_and_lists_its_contents(page):
    blocks = page.read_text(encoding="utf-8").split("\n\n")
    title, purpose, contents = blocks[0], blocks[1], blocks[2]
    assert title.startswith("# ") and "\n" not in title, title
    assert "\n" not in purpose and not purpose.startswith(("#", "-")), purpose
    items = contents.split("\n")
    assert items and all(re.match(r"\s*- \[", item) for item in items), contents
    local = [t for t in LINK.findall(contents) if t.startswith("#")]
    assert local and {t[1:] for t in local} <= anchors(page)


def test_the_api_table_is_in_the_rest_api_page():
    """tests/integration/test_admin_routes.py compares GET /coercion with this table."""
    text = (REPO / "docs" / "rest-api.md").read_text(encoding="utf-8")
    table = text.split("\n| request | credential | answer |\n", 1)[1].split("\n\n", 1)[0]
    rows = table.split("\n")
    assert rows[0] == "| --- | --- | --- |" and all(r.startswith("| `") for r in rows[1:])
    assert any("`GET /coercion`" in r for r in rows)
