"""The documentation stays honest: a short README, links that resolve, and no code citing a missing page.

A link that points nowhere, or a docstring that sends the reader to a file the repository does not have,
is a dead end for exactly the person who needs it. These checks read files only (no model, no service).
"""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300  # a README that fits on a few screens; everything else lives in docs/
CODE_FOLDERS = ("tensorllm", "flows", "tasks", "bench", "deployments")

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_MD_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces -> '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(page: Path, root: Path) -> list[str]:
    """Relative links (and images) of a markdown page whose file, or heading anchor, does not exist."""
    bad = []
    text = _FENCE.sub("", page.read_text())
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = page if not path else (page.parent / path).resolve()
        if not dest.exists():
            bad.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{page.relative_to(root)}: {target} (no heading with that anchor)")
    return bad


def cited_md_paths(source: Path) -> list[tuple[int, str]]:
    """(line, path) of every ``*.md`` path named in a Python file's comments and string literals (docstrings)."""
    out = []
    with source.open("rb") as handle:
        for tok in tokenize.tokenize(handle.readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                out.extend((tok.start[0], path) for path in _MD_PATH.findall(tok.string))
    return out


def missing_citations(root: Path, folders=CODE_FOLDERS) -> list[str]:
    """Cited ``.md`` paths that exist neither from the repository root nor next to the citing file; a bare
    file name (``SOURCE.md``) must exist somewhere in the repository."""
    bad = []
    for folder in folders:
        for source in sorted((root / folder).rglob("*.py")):
            for line, path in cited_md_paths(source):
                if "/" not in path:
                    found = any(root.rglob(path))
                else:
                    found = (root / path).exists() or (source.parent / path).exists()
                if not found:
                    bad.append(f"{source.relative_to(root)}:{line} cites {path}")
    return bad


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_fits_on_a_few_screens():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES} (move detail to docs/)"


def test_every_relative_link_resolves():
    bad = [problem for page in _pages() for problem in broken_links(page, ROOT)]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_no_code_cites_a_missing_markdown_file():
    bad = missing_citations(ROOT)
    assert not bad, "citations of files not in the repository:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each checker finds a planted fault and accepts the fixed version (so the tests above can fail)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## The `x` option: why\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [anchor](docs/a.md#the-x-option-why) [web](https://example.org/x.md)\n"
                    "```\n[in code](nowhere.md)\n```\n")
    assert broken_links(page, tmp_path) == []
    page.write_text("[gone](docs/b.md) [bad anchor](docs/a.md#nope) ![img](docs/fig.png)\n")
    problems = broken_links(page, tmp_path)
    assert len(problems) == 3 and problems[1].endswith("(no heading with that anchor)")

    code = tmp_path / "tensorllm"
    code.mkdir()
    (code / "m.py").write_text('"""See docs/a.md and notes/stack.md."""\nx = 1  # also docs/missing.md\n')
    assert missing_citations(tmp_path, ("tensorllm",)) == ["tensorllm/m.py:1 cites notes/stack.md",
                                                          "tensorllm/m.py:2 cites docs/missing.md"]


def unlisted_modules(root: Path, index: Path, folders=("tensorllm", "flows", "tasks")) -> list[str]:
    """Modules of the packages whose file name the code layout in ``index`` does not mention."""
    text = index.read_text()
    layout = text[text.index("## The code"):] if "## The code" in text else text
    names = set(re.findall(r"[\w.]+\.py", layout))
    return [source.relative_to(root).as_posix() for folder in folders
            for source in sorted((root / folder).rglob("*.py"))
            if source.name != "__init__.py" and source.name not in names]


def test_the_code_layout_names_every_module():
    """docs/index.md's code layout is how a newcomer finds their way: a module it leaves out is invisible."""
    missing = unlisted_modules(ROOT, ROOT / "docs" / "index.md")
    assert not missing, "docs/index.md's code layout does not mention: " + ", ".join(missing)


def test_the_layout_check_catches_a_new_module(tmp_path):
    (tmp_path / "tensorllm").mkdir()
    (tmp_path / "tensorllm" / "old.py").write_text("")
    index = tmp_path / "index.md"
    index.write_text("## The code\n\n```\ntensorllm/\n  old.py  something\n```\n")
    assert unlisted_modules(tmp_path, index, ("tensorllm",)) == []
    (tmp_path / "tensorllm" / "new.py").write_text("")
    assert unlisted_modules(tmp_path, index, ("tensorllm",)) == ["tensorllm/new.py"]
