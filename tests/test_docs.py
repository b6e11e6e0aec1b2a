"""The README and docs/: every link leads somewhere (file and heading), every page is linked
from the README, and the README stays a three-minute read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "data" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_leads_to_a_file_and_heading(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} leads nowhere"
        if anchor:
            assert anchor in _anchors(dest), f"{page.name}: {target}: no such heading in {dest.name}"


def test_the_readme_links_every_page_and_stays_short():
    readme = (REPO / "README.md").read_text()
    linked = {t.partition("#")[0] for t in LINK.findall(readme)}
    assert {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")} <= linked
    assert len(readme.splitlines()) <= 150
    lines = readme.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("```"))
    assert lines[first + 1].startswith("sh scripts/demo.sh") and lines[first + 2].startswith("sh scripts/test.sh")


def _screenshot_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshot", REPO / "scripts" / "screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_picture_is_current_and_its_headline_is_the_runs():
    """docs/img/demo.png is the viewer as this code draws it (the files that shape it hash as
    they did when it was made: `scripts/screenshot.py runs/<demo run>` makes it again), and every
    figure of the README's headline is one the pictured run's summary says."""
    record = json.loads((REPO / "docs" / "img" / "demo.json").read_text())
    assert record["shaped_by"] == _screenshot_module().hashes(), (
        "docs/img/demo.png is out of date: run `sh scripts/demo.sh`, then "
        "`.venv/bin/python scripts/screenshot.py runs/<its run>`"
    )
    readme = (REPO / "README.md").read_text()
    assert "](docs/img/demo.png)" in readme.split("## ")[0]  # on the first screen
    headline = next(p for p in readme.split("\n\n") if p.startswith("**The demo's result"))
    said = record["summary"]
    figures = re.findall(r"[−+]?\d+(?:\.\d+)?", headline.split("**", 2)[2])
    assert figures and all(f in said for f in figures), (figures, said)
