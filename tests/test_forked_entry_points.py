"""The tests' entry-point server: which PYTHONPATH a forked run can honour (the runs themselves:
test_fork_patch, test_strategy_plugin, test_security, test_data's spawned loader)."""

import os

from forked_entry_points import reimportable, top_level_names


def test_a_fork_honours_copies_of_the_project_and_new_modules_only(tmp_path):
    def entry(name, *files):
        folder = tmp_path / name
        for path in files:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text("")
        return str(folder)

    project = entry("project", "open_clip_dissect/__init__.py", "open_clip_train/main.py")
    probe = entry("probe", "a_probe_module_of_a_test.py")
    assert top_level_names(project) == {"open_clip_dissect", "open_clip_train"}
    assert reimportable(os.pathsep.join((probe, project))) and reimportable("")
    assert reimportable(str(tmp_path / "missing"))  # (a fresh interpreter ignores it as well)
    assert not reimportable(entry("shadow", "torch/__init__.py"))  # preloaded by the server: fresh
    assert not reimportable(os.pathsep.join((probe, entry("startup", "sitecustomize.py"))))
