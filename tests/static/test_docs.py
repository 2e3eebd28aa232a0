"""The README and the guides in docs/ stay true to the repository: every relative link resolves
(to a file, and to a heading or anchor in it), every `make` command names a target, and every
file a command or a path in backticks names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.compose_config import ROOT

DOCS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "CHANGELOG.md"]
DOCS += sorted((ROOT / "docs").glob("*.md"))


def code_of(text: str) -> list[str]:
    """The fenced blocks and inline code spans of a Markdown text: where commands are shown."""
    fenced = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    prose = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.M | re.S)
    return fenced + re.findall(r"`([^`\n]+)`", prose)


def anchors_of(path: Path) -> set[str]:
    """GitHub's heading ids (lower case, no punctuation, spaces to hyphens) and explicit ids."""
    text = path.read_text()
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    return slugs | set(re.findall(r'<a id="([^"]+)"></a>', text))


def links() -> list[tuple[Path, str]]:
    found = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if not re.match(r"[a-z]+:", target):
                found.append((doc, target))
    return found


def make_targets_shown() -> set[str]:
    shown = set()
    for doc in DOCS:
        for code in code_of(doc.read_text()):
            shown |= set(re.findall(r"(?:^|[\s(;$`])make (?:-s )?([a-z][a-z0-9-]*)", code, re.M))
    return shown


def test_the_guides_are_found():
    names = {doc.name for doc in DOCS}
    assert {"development.md", "production.md", "runbook.md", "benchmarks.md"} <= names
    assert len(links()) > 20


@pytest.mark.parametrize(("doc", "target"), links(), ids=lambda v: getattr(v, "name", v))
def test_every_relative_link_resolves(doc: Path, target: str):
    file, _, anchor = target.partition("#")
    path = (doc.parent / file).resolve() if file else doc
    assert path.exists(), f"{doc.name}: {target} does not exist"
    if anchor:
        assert anchor in anchors_of(path), f"{doc.name}: no #{anchor} in {path.name}"


@pytest.mark.parametrize(
    "target",
    sorted(make_targets_shown()),
)
def test_every_make_command_shown_names_a_target(target: str):
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^\.PHONY: {re.escape(target)}$", makefile, flags=re.M), target


def test_every_file_a_guide_names_exists():
    missing = []
    for doc in DOCS:
        for code in code_of(doc.read_text()):
            named = re.findall(r"-f (\S+\.ya?ml)", code)
            if re.fullmatch(r"[\w.-]+(/[\w.-]+)+\.(py|sh|ya?ml|json|md|toml)", code):
                named.append(code)
            missing += [f"{doc.name}: {n}" for n in named if not (ROOT / n).exists()]
    assert not missing
