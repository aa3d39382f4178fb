"""Links in the pages a package index and GitHub show: absolute where the page travels, never dead."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _repository_url() -> str:
    urls = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
    return str(urls["Source"]).rstrip("/")


def test_readme_links_are_absolute_and_point_at_files_that_exist() -> None:
    """The README is the package index page: a relative link dies there."""
    base = _repository_url() + "/blob/main/"
    links = LINK.findall((REPO / "README.md").read_text())
    assert links
    for link in links:
        if link.startswith("#"):
            continue
        assert link.startswith("https://"), f"relative link {link!r} in README.md dies on a package index"
        if link.startswith(base):
            target = link.removeprefix(base).split("#", 1)[0]
            assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


def test_relative_links_in_docs_resolve() -> None:
    pages = [REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]
    for page in pages:
        for link in LINK.findall(page.read_text()):
            if "://" in link or link.startswith(("#", "mailto:")):
                continue
            target = (page.parent / link.split("#", 1)[0]).resolve()
            assert target.exists(), f"{page.relative_to(REPO)} links to {link}, which does not exist"
