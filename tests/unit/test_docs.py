"""The documentation: the MkDocs site builds strictly and offline, the README stays a short front door,
and every relative link in the READMEs and the pages leads to a file (and anchor) that exists."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS_DIR = REPO_ROOT / "docs"
README = REPO_ROOT / "README.md"
README_MAX_LINES = 200


class _Collector(HTMLParser):
    """Link targets (`href`, `src`) and element ids of one HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.targets.append(value)
            elif name == "id":
                self.ids.add(value)


def _parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


def require_docs_tools() -> None:
    """Fail, saying how to install them, when MkDocs, its Material theme or Python-Markdown is missing."""
    for module, package in (("mkdocs", "mkdocs"), ("material", "mkdocs-material"), ("markdown", "markdown")):
        if importlib.util.find_spec(module) is None:
            pytest.fail(
                f"{package} is not installed, so the documentation cannot be checked: "
                f"`{sys.executable} -m pip install -e '.[dev]'` installs it"
            )


def markdown_links(path: Path) -> list[str]:
    """The link and image targets of a Markdown file, as Python-Markdown reads them (code is not links)."""
    require_docs_tools()
    import markdown

    html = markdown.markdown(path.read_text(encoding="utf-8"), extensions=["tables", "fenced_code"])
    return _parse(html).targets


def is_relative(target: str) -> bool:
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc and bool(parts.path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built by `mkdocs build --strict` from mkdocs.yml into a fresh folder."""
    require_docs_tools()
    site_dir = tmp_path_factory.mktemp("site")
    command = ["mkdocs", "build", "--strict", "--config-file", "mkdocs.yml", "--site-dir", str(site_dir)]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=REPO_ROOT,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return site_dir


def page_html(site: Path, page: Path) -> Path:
    """Where the built site holds a docs/ page (MkDocs' directory URLs: api.md -> api/index.html)."""
    relative = page.relative_to(DOCS_DIR).with_suffix("")
    return site / ("index.html" if relative.name == "index" else relative / "index.html")


def test_the_site_builds_with_every_page_and_fetches_nothing(site: Path) -> None:
    pages = sorted(DOCS_DIR.glob("*.md"))
    assert len(pages) >= 10, f"expected the documentation pages under {DOCS_DIR}, found {pages}"
    for page in pages:
        built = page_html(site, page)
        assert built.is_file(), f"{page.name} was not built into {built}"
        loaded = [
            target
            for target in re.findall(r'<(?:script|link|img)\b[^>]*?(?:src|href)="([^"]+)"', built.read_text())
            if urlsplit(target).scheme in ("http", "https") or target.startswith("//")
        ]
        assert not loaded, f"{page.name} loads from the internet: {loaded}"
    client_page = page_html(site, DOCS_DIR / "client.md").read_text()
    assert 'id="calls"' in client_page, "client.md did not include client/README.md's reference"


def test_the_readme_is_a_short_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: "
        "move detail into a page under docs/ and link to it"
    )


@pytest.mark.parametrize(
    "document",
    [README, REPO_ROOT / "deploy" / "README.md", *sorted(DOCS_DIR.glob("*.md"))],
    ids=lambda path: str(path.relative_to(REPO_ROOT)),
)
def test_every_relative_link_leads_to_a_file(document: Path, site: Path) -> None:
    links = [target for target in markdown_links(document) if is_relative(target)]
    missing = [target for target in links if not (document.parent / unquote(urlsplit(target).path)).exists()]
    assert not missing, f"{document.name} links to files that do not exist: {missing}"
    for target in links:
        parts = urlsplit(target)
        linked = (document.parent / unquote(parts.path)).resolve()
        if parts.fragment and linked.suffix == ".md" and linked.parent == DOCS_DIR:
            ids = _parse(page_html(site, linked).read_text()).ids
            assert parts.fragment in ids, (
                f"{document.name}: {target} names an anchor that {linked.name} lacks"
            )
