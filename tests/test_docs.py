"""The README and docs/ point only at what a clone of the repository holds, and tell what they
promise (the demo's time and machine, its one-epoch variant)."""

import contextlib
import glob
import io
import os
import re
import shlex
import subprocess

import pytest
from conftest import REPO

from open_clip_dissect import cli
from open_clip_dissect.errors import InputError, OneLineParser
from open_clip_dissect.openclip.evaluation import benchmark_eval
from open_clip_dissect.openclip.launch import params

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


def heading_anchors(text) -> set:
    """The anchors GitHub gives the headings of a markdown text."""
    text = re.sub(r"^[ \t]*```.*?^[ \t]*```", "", text, flags=re.S | re.M)  # no headings in code
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)
    }


@pytest.mark.parametrize("doc", DOCS)
def test_anchors_name_a_heading_of_their_page(doc):
    """``page.md#section`` and ``#section``: the section is on that page (text moved between
    pages takes its anchors along)."""
    wrong = []
    for match in LINK.finditer(read(doc)):
        target = next(group for group in match.groups() if group)
        if "#" not in target or re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):
            continue
        path, anchor = target.split("#", 1)
        page = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if not page.endswith(".md") or anchor not in heading_anchors(read(page)):
            wrong.append(target)
    assert not wrong, f"{doc} links to sections that are not where it says: {wrong}"


def test_the_anchor_checker_follows_github():
    assert heading_anchors("# A\n## Data: keys in every batch\n### `make bench` (PROFILE=quick)\n") == {
        "a",
        "data-keys-in-every-batch",
        "make-bench-profilequick",
    }


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


def test_readme_is_a_front_page_that_links_every_docs_page():
    readme = read("README.md")
    assert len(readme.splitlines()) <= 250, "README.md is the front page: move detail to a page under docs/"
    linked = {os.path.normpath(target) for target in relative_links(readme)}
    pages = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))}
    assert pages and not pages - linked, f"README.md does not link {sorted(pages - linked)}"


# Commands in the docs, run through the real parsers.
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", flags=re.S | re.M)  # also indented, in a list
TRAINING = re.compile(r"-m\s+open_clip_dissect\.main\b")
SUBCOMMAND = re.compile(r"(?:^|\s)open-clip-dissect\s+[a-z]")
ENV_VARIABLE = re.compile(r"^\$(\w+|\{\w+\})$")


def documented_commands(text):
    """``(command line, kind, argv, elided)`` of every command in a fenced block of ``text`` that
    runs ``python -m open_clip_dissect.main`` (kind ``train``; whatever launches it, ``srun``,
    ``torchrun ... --``, env assignments) or ``open-clip-dissect <subcommand>`` (kind: the
    subcommand). Backslash-continued lines are joined and comments dropped; ``...`` (flags left
    out) is removed and reported as ``elided``; ``[--flag]`` (optional) becomes ``--flag``;
    ``$VAR`` and ``<...>`` placeholders become ``1``."""
    for block in FENCE.finditer(text):
        for line in block.group(1).replace("\\\n", " ").splitlines():
            training = TRAINING.search(line)
            if not training and not SUBCOMMAND.search(line):
                continue
            tokens = shlex.split(line, comments=True)
            if training:
                start = next(i for i, t in enumerate(tokens) if t == "open_clip_dissect.main" and tokens[i - 1] == "-m")
                kind, argv = "train", tokens[start + 1 :]
                argv = argv[1:] if argv[:1] == ["--"] else argv  # torchrun ... -m open_clip_dissect.main -- <args>
            else:
                start = tokens.index("open-clip-dissect")
                kind, argv = tokens[start + 1], tokens[start + 2 :]
            elided = "..." in argv
            argv = [
                "1" if ENV_VARIABLE.match(t) or re.fullmatch(r"<[^>]+>", t) else re.sub(r"^\[(-.*)\]$", r"\1", t)
                for t in argv
                if t != "..."
            ]
            yield " ".join(line.split()), kind, argv, elided


COMMANDS = [(doc, *command) for doc in DOCS for command in documented_commands(read(doc))]


class _Parsed(Exception):
    pass


def parse_error(kind, argv, elided, tmp_path):
    """Why ``argv`` does not parse (``None`` when it does), through the parser the command uses.

    - ``train``: ``params.parse_args(argv)``, OpenCLIP's flags and ours. argparse checks every
      flag's name (or a unique prefix of it, as the command itself accepts), type and choices; then ``params.validate_args`` checks values and combinations.
      The files a doc names live on the reader's machine (``/data/...``, ``keep/``): a
      ``--keep-list``, ``--oracle-checkpoint`` or ``--noisy-keys`` that does not exist here is
      replaced by a file that does, and ``--retrieval-benchmark``'s names are checked without its
      folders (``--benchmark-root``), before validation runs. Training data are never read.
    - ``open-clip-dissect <subcommand>``: the subcommand's own parser in ``cli``, stopped as soon
      as it has parsed, so the command never runs; the checks after parsing (files, rules) are
      not made. In an ``elided`` command (``...``: flags left out) required flags may be missing.
    """
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), pytest.MonkeyPatch.context() as patch:
            if kind == "train":
                parsed = []
                patch.setattr(params, "validate_args", parsed.append)
                params.parse_args(argv)
                patch.undo()
                (args,) = parsed
                stand_in = tmp_path / "stand-in.txt"
                stand_in.write_text("a-key\n")
                for dest in ("keep_list", "oracle_checkpoint", "noisy_keys"):
                    if getattr(args, dest) is not None and not os.path.exists(getattr(args, dest)):
                        setattr(args, dest, str(stand_in))
                if args.retrieval_benchmark and args.benchmark_root:
                    benchmark_eval.benchmark_names(args.retrieval_benchmark)
                    args.retrieval_benchmark = args.benchmark_root = None
                params.validate_args(args)
                return None
            if kind not in cli.COMMANDS:
                return f"no subcommand {kind!r} (open-clip-dissect has {', '.join(cli.COMMANDS)})"

            class StopAfterParsing(OneLineParser):
                def parse_args(self, args=None, namespace=None):
                    if elided:
                        for item in (*self._actions, *self._mutually_exclusive_groups):
                            item.required = False
                    raise _Parsed(super().parse_args(args, namespace))

            patch.setattr(cli, "OneLineParser", StopAfterParsing)
            cli.COMMANDS[kind][0](argv)
            return f"open-clip-dissect {kind} ran without parsing through cli's OneLineParser"
    except _Parsed:
        return None
    except SystemExit as exn:
        return f"argparse exit {exn.code}: {stderr.getvalue().strip().splitlines()[-1:]}"
    except InputError as exn:
        return f"InputError: {exn}"


def test_the_docs_show_commands_of_each_kind():
    kinds = {kind for _, _, kind, _, _ in COMMANDS}
    assert {"train", "eval", "make-data", "summary", "embed", "score", "filter"} <= kinds, kinds
    readme = [command for doc, command, kind, _, _ in COMMANDS if doc == "README.md" and kind == "train"]
    assert any("--selection dissect-mome --ratio 0.5" in command for command in readme), readme


@pytest.mark.parametrize(
    "doc, command, kind, argv, elided", COMMANDS, ids=[f"{c[0]}:{i}" for i, c in enumerate(COMMANDS)]
)
def test_documented_commands_parse(doc, command, kind, argv, elided, tmp_path):
    error = parse_error(kind, argv, elided, tmp_path)
    assert error is None, f"{doc}: `{command}` does not parse: {error}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("python -m open_clip_dissect.main ... --selection dissect-mome --ratoi 0.5", "--ratoi"),
        ("srun python -u -m open_clip_dissect.main --selection dissect-mom", "dissect-mom"),
        ("torchrun --nproc_per_node 2 -m open_clip_dissect.main -- --selection random --ratio 2", "--ratio"),
        ("open-clip-dissect eval --model RN50 --benchmark flickr30k --dataset-rot /data/f30k", "--dataset-rot"),
        ("open-clip-dissect filter --scores s.parquet --out keep/", "--keep"),  # a required flag left out
        ("open-clip-dissect evaluate --model RN50", "evaluate"),
    ],
)
def test_the_command_check_fails_on_a_bad_command(text, expected, tmp_path):
    ((_, kind, argv, elided),) = documented_commands(f"```bash\n{text}\n```\n")
    error = parse_error(kind, argv, elided, tmp_path)
    assert error is not None and expected in error, error
