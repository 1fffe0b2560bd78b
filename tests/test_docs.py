"""Every reference in code, tests, benchmarks and the README points at a document and a section
that exist in the repository (no design notes that users do not have)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((ROOT / "src").rglob("*.py")),
    *sorted((ROOT / "benchmarks").glob("*.py")),
    *sorted((ROOT / "benchmarks").glob("*.md")),
    *sorted((ROOT / "tests").glob("*.py")),
    *sorted((ROOT / "configs").rglob("*.yaml")),
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    *sorted((ROOT / "docs").glob("*.md")),
]


def _headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text().splitlines() if line[:1] == "#"]


def _texts() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in SOURCES if p.name != "test_docs.py"}


def test_method_sections_exist() -> None:
    numbers = {
        m.group(1) for h in _headings(ROOT / "docs" / "method.md") if (m := re.match(r"§(\d+) ", h))
    }
    assert numbers == {str(i) for i in range(1, 9)}
    cited = {
        (path.relative_to(ROOT), n)
        for path, text in _texts().items()
        for n in re.findall(r"docs/method\.md §(\d+)", text)
    }
    assert cited  # the code does cite it
    assert {(p, n) for p, n in cited if n not in numbers} == set()


def test_llada_sections_exist() -> None:
    headings = set(_headings(ROOT / "docs" / "llada.md"))
    cited = {
        (path.relative_to(ROOT), name)
        for path, text in _texts().items()
        for name in re.findall(r'docs/llada\.md "([^"]+)"', text)
    }
    assert cited
    assert {(p, n) for p, n in cited if n not in headings} == set()


def test_no_reference_to_documents_outside_the_repository() -> None:
    # (and no "docs/x.md#anchor": sections are cited as "§N" or by their quoted heading)
    outside = re.compile(
        r"\bSPEC(\.md| \d| section)|LLADA_ARCH|MEASUREMENTS\.md|\.\./shared|docs/[\w-]+\.md#"
    )
    found = [
        f"{path.relative_to(ROOT)}:{i}"
        for path, text in _texts().items()
        for i, line in enumerate(text.splitlines(), 1)
        if outside.search(line)
    ]
    assert found == []
    for path, text in _texts().items():
        for doc in re.findall(r"\bdocs/[\w-]+\.md", text):
            assert (ROOT / doc).is_file(), (path, doc)
