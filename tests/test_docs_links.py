"""Every relative link and image in README.md and docs/**/*.md points at a file that exists.

Two kinds of reference are checked:

- Markdown links and images, ``[text](path)`` / ``![alt](path)``, and HTML ``<img src="path">``, resolved
  against the folder of the file that holds them (web addresses and in-page anchors are skipped; a
  ``#fragment`` after a path is dropped).
- Plain-text mentions of files under ``docs/`` (``docs/slate.md``, ``docs/results/x.png``) in README.md,
  the docs, pyproject.toml and the top-level configs, resolved against the repository root, so a comment
  such as "see docs/install.md" cannot point at nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML_IMAGE = re.compile(r"<img\s[^>]*src=[\"']([^\"']+)[\"']", re.IGNORECASE)
DOCS_MENTION = re.compile(r"(?<![\w./-])docs/[\w./-]*\w\.(?:md|png|json)\b")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")


def markdown_files(root: Path) -> list[Path]:
    """README.md and every Markdown file under docs/, sorted."""
    return sorted([root / "README.md", *(root / "docs").rglob("*.md")])


def broken_links(path: Path) -> list[str]:
    """Relative link and image targets in the Markdown file ``path`` that do not exist.

    Args:
        path: a Markdown file; links inside fenced code blocks are ignored.

    Returns:
        One ``"<file>:<line>: <target>"`` entry per broken target, in file order.
    """
    text = path.read_text(encoding="utf-8")
    prose = FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    broken = []
    for pattern in (MARKDOWN_LINK, REFERENCE_DEFINITION, HTML_IMAGE):
        for match in pattern.finditer(prose):
            target = match.group(1)
            if target.startswith(EXTERNAL) or target.startswith("#"):
                continue
            target_path = target.split("#", 1)[0]
            if not (path.parent / target_path).exists():
                line = prose.count("\n", 0, match.start()) + 1
                broken.append(f"{path}:{line}: {target}")
    return broken


def broken_docs_mentions(path: Path, root: Path) -> list[str]:
    """Plain-text mentions of ``docs/...`` files in ``path`` that do not exist under ``root``."""
    text = path.read_text(encoding="utf-8")
    broken = []
    for match in DOCS_MENTION.finditer(text):
        if not (root / match.group(0)).exists():
            line = text.count("\n", 0, match.start()) + 1
            broken.append(f"{path}:{line}: {match.group(0)}")
    return broken


def mention_files(root: Path) -> list[Path]:
    """Files whose plain-text ``docs/...`` mentions are checked."""
    return [*markdown_files(root), root / "pyproject.toml", *sorted((root / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", markdown_files(REPO_ROOT), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_and_images_exist(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", mention_files(REPO_ROOT), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_mentioned_docs_files_exist(path: Path) -> None:
    assert broken_docs_mentions(path, REPO_ROOT) == []


def test_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "present.md").write_text("# here\n")
    (tmp_path / "docs" / "results" / "figure.png").write_bytes(b"png")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[ok](present.md) [ok, anchor](present.md#here) [web](https://example.org) [anchor](#top)\n"
        '![ok](results/figure.png) <img src="results/figure.png">\n'
        "[missing](absent.md)\n"
        "![missing image](results/absent.png)\n"
        '<img width="10" src="results/gone.png">\n'
        "[ref]: ../nowhere.md\n"
        "```\n[in a code block](ignored.md)\n```\n"
        "Plain mention of docs/present.md and of docs/install.md.\n"
    )
    assert broken_links(page) == [
        f"{page}:3: absent.md",
        f"{page}:4: results/absent.png",
        f"{page}:6: ../nowhere.md",
        f"{page}:5: results/gone.png",
    ]
    assert broken_docs_mentions(page, tmp_path) == [f"{page}:10: docs/install.md"]
