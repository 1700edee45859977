"""The docs stay doors: every relative link resolves, and ARCHITECTURE.md names every module.

Links are checked in README.md, docs/*.md and every Markdown file under experiments/ (the results,
their archive, the runbook), since results move to the archive and docs move between files. Web
links are not followed; a link's ``#anchor`` into a Markdown file must name one of its headings
(GitHub's slugs). A module added to ``distill_jax/`` needs a row in its folder's table of docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


PACKAGE = ROOT / "distill_jax"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def markdown_files() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "experiments").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link targets outside code, without web links, mail links and pure anchors."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = [m.group(1) for m in LINK.finditer(prose)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def heading_slugs(text: str) -> set[str]:
    """GitHub's anchors of the Markdown headings in ``text`` (lower case, punctuation dropped, spaces to ``-``)."""
    headings = re.findall(r"^#{1,6}\s+(.*?)\s*$", FENCE.sub("", text), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def broken_links(path: pathlib.Path) -> list[str]:
    broken = []
    for target in relative_links(path.read_text()):
        file, _, anchor = target.partition("#")
        linked = path.parent / file
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in heading_slugs(linked.read_text())):
            broken.append(target)
    return broken


def test_link_extraction_skips_code_web_links_and_anchors():
    text = ("see [a](docs/a.md#part) and [b](b.md \"title\")\n`[x](inline.md)`\n```\n[y](fenced.md)\n```\n"
            "[web](https://example.org) [top](#top) [mail](mailto:x@example.org)\n")
    assert relative_links(text) == ["docs/a.md#part", "b.md"]


def test_heading_slugs_follow_github():
    assert heading_slugs("# Sweeps: hyperparameters as data\n## The `run/` shell\n```\n# not a heading\n```\n") == {
        "sweeps-hyperparameters-as-data", "the-run-shell"}


def test_every_relative_link_resolves():
    files = markdown_files()
    assert ROOT / "README.md" in files and any(p.parent.name == "docs" for p in files)
    broken = {str(p.relative_to(ROOT)): links for p in files if (links := broken_links(p))}
    assert not broken, f"relative links to missing files or headings: {broken}"


def architecture_sections(text: str) -> dict[str, str]:
    """``{heading: body}`` of the ``### `` sections of docs/ARCHITECTURE.md."""
    parts = re.split(r"^### (.*)$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def unnamed_modules(text: str) -> list[str]:
    """Modules of the package that their folder's section of ``text`` does not name (``__init__.py`` aside)."""
    sections = architecture_sections(text)
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py":
            continue
        # A top-level module sits in the top-level table, or (an entry point) in a section that names it.
        homes = [f"distill_jax/{relative.parts[0]}/"] if len(relative.parts) > 1 else ["distill_jax/", f"distill_jax/{path.name}"]
        body = "".join(b for heading, b in sections.items() if any(f"`{home}`" in heading for home in homes))
        if not re.search(rf"[`/]{re.escape(path.name)}`", body):
            missing.append(relative.as_posix())
    return missing


def test_architecture_names_every_module():
    assert not unnamed_modules(ARCHITECTURE.read_text()), "docs/ARCHITECTURE.md has no row for these modules"


def test_a_module_named_only_in_another_folders_section_counts_as_missing():
    text = ARCHITECTURE.read_text()
    top = next(heading for heading in architecture_sections(text) if "`distill_jax/`" in heading)
    without_config = text.replace(architecture_sections(text)[top],
                                  architecture_sections(text)[top].replace("`config.py`", "`configuration`"))
    assert unnamed_modules(without_config) == ["config.py"]  # the quadruped's config.py does not stand in for it
