"""The README and docs/ point only at what a clone of the repository holds, and tell what they
promise (the demo's time and machine, its one-epoch variant)."""

import glob
import os
import re
import subprocess

import pytest
from conftest import REPO

DOCS = [
    "README.md",
    *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)),
]
LINK = re.compile(
    r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"  # [text](target), ![alt](target)
    r"|^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)"  # [label]: target
    r"|(?:href|src)=\"([^\"]+)\"",
    flags=re.M,
)  # <a href="...">, <img src="...">
CODE_SPAN = re.compile(r"`([^`\s]+)`")
PLACEHOLDER = re.compile(r"[<>*{}%$]")
OTHER_REPOSITORIES = {"src/open_clip_train/"}  # OpenCLIP's layout, which patches/ applies to


def tracked_paths() -> set:
    """Every file git tracks, and every folder that holds one."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    paths = set(files)
    for path in files:
        parts = path.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return paths


def read(doc):
    with open(os.path.join(REPO, doc)) as f:
        return f.read()


def relative_links(text):
    for match in LINK.finditer(text):
        target = next(group for group in match.groups() if group)
        if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", target, flags=re.I):  # not a URL, mailto: or an anchor
            yield target.split("#")[0]


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve_to_files_in_the_repository(doc):
    tracked = tracked_paths()
    broken = []
    for target in relative_links(read(doc)):
        path = os.path.normpath(os.path.join(os.path.dirname(doc), target))
        if path not in tracked:
            broken.append(target)
    assert not broken, f"{doc} links to what the repository does not hold: {broken}"


@pytest.mark.parametrize("doc", DOCS)
def test_repository_paths_in_code_spans_exist(doc):
    """`src/...`, `scripts/...`, `../...`: a path the text names in the repository must be there
    (outputs such as `bench/results/...` live in folders a clone does not track)."""
    tracked = tracked_paths()
    top_level = {path for path in tracked if "/" not in path and os.path.isdir(os.path.join(REPO, path))}
    missing = []
    for span in CODE_SPAN.findall(read(doc)):
        if span.startswith("../"):
            missing.append(span)  # outside the repository: a clone has nothing there
        elif (
            "/" in span
            and span.split("/")[0] in top_level
            and not PLACEHOLDER.search(span)
            and span not in OTHER_REPOSITORIES
        ):
            if os.path.normpath(span) not in tracked:
                missing.append(span)
    assert not missing, f"{doc} names paths the repository does not hold: {missing}"


def test_the_link_checker_sees_links():
    text = "![plot](docs/a.png) [x](../shared/reference/A.md) [web](https://x.org) [top](#top)\n[ref]: scripts/b.py\n"
    assert list(relative_links(text)) == ["docs/a.png", "../shared/reference/A.md", "scripts/b.py"]


def test_demo_time_names_its_machine_and_a_one_epoch_variant():
    readme = read("README.md")
    start = readme.index("## Two commands")
    section = readme[start : readme.index("\n## ", start + 1)]
    assert "make demo DEMO_EPOCHS=1" in section
    assert re.search(r"measured on .*CPU", section, flags=re.S)
    with open(os.path.join(REPO, "Makefile")) as f:
        assert re.search(r"^DEMO_EPOCHS \?= 5$", f.read(), flags=re.M)  # the variable the README names
