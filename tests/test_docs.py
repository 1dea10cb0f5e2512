"""Every ```python block in README.md and docs/*.md runs, so the docs cannot rot.

The rule the docs are written to:

* Each block is complete: it runs on its own, in a fresh namespace, with a
  fresh temporary directory as the working directory (so
  ``sqlite:///audit.db`` is a new, empty store).
* A block preceded by ``<!-- continued -->`` (the last non-blank line before
  its opening fence) continues the block before it in the same file: it
  shares that block's namespace and directory. Its test runs the chain from
  the last block that is not continued.
* A block preceded by ``<!-- no-run -->`` is shown but not run. Use it
  sparingly, and never for an example of public behaviour.

Examples state their results with ``assert``, so a change of behaviour
fails the block that describes it.
"""

from __future__ import annotations

import linecache
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

NO_RUN = "<!-- no-run -->"
CONTINUED = "<!-- continued -->"
_OPEN = re.compile(r"^```python\s*$")
_CLOSE = re.compile(r"^```\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    marker: str | None  # NO_RUN, CONTINUED or None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, with the marker just before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not _OPEN.match(lines[i]):
            i += 1
            continue
        start = i
        previous = next((text.strip() for text in reversed(lines[:start]) if text.strip()), "")
        marker = previous if previous in (NO_RUN, CONTINUED) else None
        i += 1
        while i < len(lines) and not _CLOSE.match(lines[i]):
            i += 1
        if i == len(lines):
            raise ValueError(f"{path.name}:{start + 1}: unclosed ```python block")
        blocks.append(Block(path, start + 1, "\n".join(lines[start + 1 : i]) + "\n", marker))
        i += 1
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in extract_blocks(path)]


def chain(block: Block) -> list[Block]:
    """The blocks to run for ``block``: it and the blocks it continues."""
    same_file = [b for b in ALL_BLOCKS if b.path == block.path and b.line <= block.line]
    runs: list[Block] = []
    for candidate in reversed(same_file):
        if candidate.marker == NO_RUN:
            raise ValueError(f"{candidate.name}: a block cannot continue a no-run block")
        runs.insert(0, candidate)
        if candidate.marker != CONTINUED:
            return runs
    raise ValueError(f"{block.name}: the first block of a file cannot be a continuation")


def run_block(block: Block, namespace: dict[str, object]) -> None:
    """Run a block so that a traceback names the Markdown file and its line numbers."""
    filename = str(block.path.relative_to(ROOT))
    text = block.path.read_text(encoding="utf-8")
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    exec(compile("\n" * block.line + block.code, filename, "exec"), namespace)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.name for b in ALL_BLOCKS])
def test_doc_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.marker == NO_RUN:
        pytest.skip("marked <!-- no-run -->")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_example"}
    *setup, last = chain(block)
    for earlier in setup:
        try:
            run_block(earlier, namespace)
        except Exception as exc:  # report which earlier block broke the chain
            pytest.fail(f"{earlier.name}, which {block.name} continues, failed: {exc!r}")
    run_block(last, namespace)


def test_readme_has_a_runnable_example() -> None:
    readme = [b for b in ALL_BLOCKS if b.path.name == "README.md"]
    assert readme, "README.md has no ```python example"
    assert all(b.marker is None for b in readme)


def test_no_run_is_rare() -> None:
    skipped = [b.name for b in ALL_BLOCKS if b.marker == NO_RUN]
    assert len(skipped) <= 2, f"too many <!-- no-run --> blocks: {skipped}"


class TestExtraction:
    def test_markers_and_lines(self, tmp_path: Path) -> None:
        doc = tmp_path / "doc.md"
        doc.write_text(
            "# T\n\n```python\nx = 1\n```\n\n<!-- continued -->\n\n```python\nassert x == 1\n```\n"
            "<!-- no-run -->\n```python\nraise SystemExit\n```\n\n```sh\nls\n```\n",
            encoding="utf-8",
        )
        blocks = extract_blocks(doc)
        assert [(b.line, b.marker, b.code) for b in blocks] == [
            (3, None, "x = 1\n"),
            (9, CONTINUED, "assert x == 1\n"),
            (13, NO_RUN, "raise SystemExit\n"),
        ]

    def test_unclosed_block_is_an_error(self, tmp_path: Path) -> None:
        doc = tmp_path / "doc.md"
        doc.write_text("```python\nx = 1\n", encoding="utf-8")
        with pytest.raises(ValueError, match="unclosed"):
            extract_blocks(doc)
