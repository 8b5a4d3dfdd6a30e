"""``openclip.launch.upstream`` is the one list of OpenCLIP names this package uses: every name
in it exists in the installed release, and every name the source takes from ``open_clip`` or
``open_clip_train`` is in it."""

import ast
import importlib
import pathlib
from importlib.metadata import version

import pytest

from open_clip_dissect.openclip.launch import upstream

SOURCE = pathlib.Path(upstream.__file__).resolve().parents[2]  # src/open_clip_dissect
UPSTREAM_PACKAGES = ("open_clip", "open_clip_train")


def names_used(root: pathlib.Path) -> dict:
    """``{dotted upstream name: [files]}``: ``from open_clip_train.x import y`` gives
    ``open_clip_train.x.y``; ``import open_clip_train.x as u`` then ``u.y`` gives the same."""
    used = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in UPSTREAM_PACKAGES:
                        top = alias.name.split(".")[0]
                        aliases[alias.asname or top] = alias.name if alias.asname else top
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UPSTREAM_PACKAGES:
                for alias in node.names:
                    used.setdefault(f"{node.module}.{alias.name}", []).append(path.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain, inner = [], node
                while isinstance(inner, ast.Attribute):
                    chain.append(inner.attr)
                    inner = inner.value
                if isinstance(inner, ast.Name) and inner.id in aliases:
                    used.setdefault(".".join([aliases[inner.id], *reversed(chain)]), []).append(path.name)
    # ``a.b.c`` also yields its prefix ``a.b`` from the inner Attribute node: keep the longest.
    return {n: f for n, f in used.items() if not any(o.startswith(n + ".") for o in used)}


def resolve(name: str):
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def test_the_installed_release_is_the_pinned_one():
    assert version("open_clip_torch") == upstream.UPSTREAM_VERSION


@pytest.mark.parametrize("name", sorted(upstream.listed()))
def test_every_listed_name_exists_in_the_installed_release(name):
    resolve(name)  # raises naming the missing attribute


def test_every_upstream_name_the_source_uses_is_listed():
    used = names_used(SOURCE)
    assert "open_clip_train.main.main" in used  # the scan itself works
    missing = {n: files for n, files in used.items() if n not in upstream.listed()}
    assert not missing, f"add to openclip/launch/upstream.py: {missing}"


def test_the_scan_finds_a_new_use(tmp_path):
    (tmp_path / "m.py").write_text("import open_clip_train.data as u\nfrom open_clip import tokenize\nu.new_thing()\n")
    assert set(names_used(tmp_path)) == {"open_clip_train.data.new_thing", "open_clip.tokenize"}
