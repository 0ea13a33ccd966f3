"""The docs' cross-references: every `README "Section"` / `README: Section` that code and pages cite names a section of
README.md, and every relative Markdown link in the README and the pages under benchmark/ and plots/ points at a file
that exists (and, with #anchor, at one of its headings), so a renamed section or moved page cannot leave a dangling
pointer."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*REPO.glob("cleanrl_pave/*.py"), *REPO.glob("benchmark/**/*.py"), *REPO.glob("plots/*.py"),
                  *REPO.glob("benchmark/**/*.md"), *REPO.glob("plots/*.md")])
PAGES = sorted([REPO / "README.md", *REPO.glob("benchmark/**/*.md"), *REPO.glob("plots/*.md")])
SECTION_REFERENCE = re.compile(r'README(?: section)?(?:: | ")([^")\n;]+)')
LINK = re.compile(r"\]\(([^)\s]+)\)")


def headings(page: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_anchor_rule_is_githubs():
    assert anchor("What differs across machines") == "what-differs-across-machines"
    assert anchor("`--cudagraphs`: each whole update as CUDA graphs") == "--cudagraphs-each-whole-update-as-cuda-graphs"


@pytest.mark.parametrize("source", SOURCES, ids=[str(path.relative_to(REPO)) for path in SOURCES])
def test_every_readme_section_cited_exists(source):
    sections = [line[3:].strip() for line in (REPO / "README.md").read_text().splitlines() if line.startswith("## ")]
    for match in SECTION_REFERENCE.finditer(source.read_text()):
        # "Deliberate differences, item 1", "Baselines: the same for every env": the section's (short) name
        cited = re.split(r"[,:]", match.group(1))[0].strip()
        assert any(f"{cited} ".startswith(f"{section} ") or f"{section} ".startswith(f"{cited} ")
                   for section in sections), \
            f"{source.relative_to(REPO)} cites README section {cited!r}; README's sections: {sections}"


@pytest.mark.parametrize("page", PAGES, ids=[str(path.relative_to(REPO)) for path in PAGES])
def test_every_relative_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"
        if fragment and linked.suffix == ".md":
            assert fragment in {anchor(heading) for heading in headings(linked)}, \
                f"{page.relative_to(REPO)} links to {target}: no such heading in {linked.name}"
