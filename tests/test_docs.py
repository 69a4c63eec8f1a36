"""The user documentation: README.md and docs/*.md.

Pure file reading (no JAX): every relative link and image points at something in the
repository, the README holds the exact commands CI and a new user run, and no page
refers to development issues or to paths of the machine it was written on.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
# The pages that link into the docs and are checked with them.
PAGES = [README, *DOCS, ROOT / "experiments" / "README.md", ROOT / "notebooks" / "README.md"]
TRAIN_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/dexjax train"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
# [text](target) and ![alt](target); the target ends at whitespace or ")" (an optional
# "title" may follow).
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def strip_code(text: str) -> str:
    """The text without fenced code blocks (code spans stay: [`file`](path) is a link)."""
    return FENCE.sub("", text)


def links(text: str) -> list[str]:
    """Link and image targets of a markdown text, outside fenced code."""
    body = strip_code(text)
    found = MD_LINK.findall(body) + IMG_SRC.findall(body)
    return [t for t in found if t]


def is_external(target: str) -> bool:
    return re.match(r"^(https?:|mailto:|ftp:)", target, re.IGNORECASE) is not None


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, markup and punctuation dropped, spaces
    to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, title in HEADING.findall(strip_code(path.read_text(encoding="utf-8"))):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def test_pages_exist():
    missing = [p for p in PAGES if not p.is_file()]
    assert not missing, f"documentation pages missing: {[rel(p) for p in missing]}"
    names = {p.name for p in DOCS}
    for page in ("README.md", "environment.md", "training.md", "benchmarks.md", "results.md"):
        assert page in names, f"docs/{page} is missing"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_point_at_files(page):
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if is_external(target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path.startswith("/"):
            broken.append(f"{target} (absolute path)")
            continue
        resolved = (page.parent / path).resolve()
        if not resolved.exists():
            broken.append(target)
        elif ROOT not in (resolved, *resolved.parents):
            broken.append(f"{target} (outside the repository)")
    assert not broken, f"{rel(page)}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_anchors_point_at_headings(page):
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if is_external(target) or "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        dest = (page.parent / path).resolve() if path else page
        if dest.suffix != ".md" or not dest.is_file():
            continue  # a missing file is reported by the link test
        if anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{rel(page)}: links to headings that do not exist: {broken}"


def ci_test_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    cd = [i for i, line in enumerate(lines) if line.strip().startswith("cd ")]
    assert cd, ".ci/run: no `cd` line before the test command"
    commands = [
        line.strip() for line in lines[cd[-1] + 1 :] if line.strip().startswith("python3 -m venv")
    ]
    assert len(commands) == 1, f".ci/run: expected one `python3 -m venv` line, got {commands}"
    return commands[0]


def fenced_lines(text: str) -> set[str]:
    return {line.strip() for block in FENCE.finditer(text) for line in block.group(0).splitlines()}


def test_readme_has_ci_test_command():
    command = ci_test_command()
    assert "pytest" in command, f".ci/run: the test command does not run pytest: {command}"
    assert command in fenced_lines(README.read_text(encoding="utf-8")), (
        f"README.md: the test command of .ci/run is not a command line of the README: {command}"
    )


def test_readme_has_train_setup_command():
    text = README.read_text(encoding="utf-8")
    quickstart = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert quickstart, "README.md: no '## Quickstart' section"
    assert TRAIN_COMMAND in fenced_lines(quickstart.group(1)), (
        f"README.md: the Quickstart has no command line {TRAIN_COMMAND!r}"
    )


ISSUE_REFERENCE = re.compile(
    r"\b(?:issues?|pull request|PR)\s*#?\s*\d+"  # "issue 6", "issues 3", "PR #12"
    r"|(?<![\w&/#])#\d+\b",  # "#14" (not "&#39;", not a heading "# Title")
    re.IGNORECASE,
)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_no_machine_paths_or_issue_numbers(page):
    problems = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if "/work/" in line:
            problems.append(f"line {number}: machine path: {line.strip()}")
        for match in ISSUE_REFERENCE.finditer(line):
            problems.append(f"line {number}: issue reference {match.group(0)!r}: {line.strip()}")
    assert not problems, f"{rel(page)}: " + "; ".join(problems)


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; details belong in docs/"
