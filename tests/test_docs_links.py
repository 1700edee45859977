"""Every relative link in the Markdown docs points at a file or folder that exists.

Checked: README.md, docs/*.md and every Markdown file under experiments/ (the results, their
archive, the runbook), since results move to the archive and docs move between files. Web links
and in-page anchors are not followed; a link's ``#anchor`` part is dropped before the path is checked.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "experiments").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link targets outside code, without web links, mail links and pure anchors."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = [m.group(1) for m in LINK.finditer(prose)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def broken_links(path: pathlib.Path) -> list[str]:
    return [target for target in relative_links(path.read_text())
            if not (path.parent / target.split("#", 1)[0]).exists()]


def test_link_extraction_skips_code_web_links_and_anchors():
    text = ("see [a](docs/a.md#part) and [b](b.md \"title\")\n`[x](inline.md)`\n```\n[y](fenced.md)\n```\n"
            "[web](https://example.org) [top](#top) [mail](mailto:x@example.org)\n")
    assert relative_links(text) == ["docs/a.md#part", "b.md"]


def test_every_relative_link_resolves():
    files = markdown_files()
    assert ROOT / "README.md" in files and any(p.parent.name == "docs" for p in files)
    broken = {str(p.relative_to(ROOT)): links for p in files if (links := broken_links(p))}
    assert not broken, f"relative links to missing files: {broken}"
