"""The README is a front door and docs/ holds the reference: every link between them leads to a
file that exists and, where it names one, to a heading of that file (GitHub's anchors), so a
reader who follows one never lands on nothing."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation but '-' and '_' dropped, spaces
    to '-', a repeated one numbered."""
    found, seen = set(), {}
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip()
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text(encoding="utf-8"))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


def test_the_readme_is_a_front_door_that_reaches_every_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 400
    reached = {Path(target.partition("#")[0]).name for target in links(ROOT / "README.md")}
    assert {page.name for page in PAGES[1:]} <= reached


def test_every_block_that_shows_output_is_checked_or_marked_as_an_illustration():
    """Command blocks (sh, yaml, ...) show what to type; a block of plain output either is the
    README's example run, which tests/unit/test_readme.py holds to the goldens, or says it is an
    illustration in the lines before it."""
    unmarked = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        inside = False
        for number, line in enumerate(lines):
            if not line.strip().startswith("```"):
                continue
            if inside:
                inside = False
                continue
            inside = True
            if line.strip() not in ("```", "```text"):
                continue
            body = lines[number + 1] if number + 1 < len(lines) else ""
            before = " ".join(lines[max(0, number - 3):number])
            checked = page.name == "README.md" and " WILD results " in "\n".join(lines[number:number + 3])
            if not checked and "illustration" not in before and not body.lstrip().startswith(("pytest ", "pip ")):
                unmarked.append(f"{page.name}:{number + 1}: {body[:60]}")
    assert not unmarked, unmarked
