"""One attempt at a run under ``python -m open_clip_dissect.main``: inputs checked before
OpenCLIP writes anything, and a failed attempt that does not block its own retry.

``open_clip_train.main`` creates ``<--logs>/<--name>/`` with ``out.log`` (and ``params.txt``)
right after parsing the flags, and refuses to start in a folder that has an ``out.log`` unless
``--resume latest`` is given ("Experiment already exists", without the folder). So:

- a ``--name`` whose folder holds a run is refused before that, naming the folder and the two
  ways on: a new ``--name``, or ``--resume latest`` (``check_run_folder``);

- ``RunAttempt.parse_args`` checks every file the flags name (data, keep-list, ``--resume``,
  the model configs) right after the flags themselves: a run refused for bad input leaves no
  folder behind (``check_run_inputs``);
- a run that still fails after OpenCLIP's start-up (an epoch without samples, a bad selection
  state, a bug) and wrote no checkpoint has its files moved to ``<name>/failed-<time>/``: the
  same command then runs again in the same folder, and nothing the user could need is deleted.
  A folder with a checkpoint is left as it is: ``--resume latest`` continues that run.
"""

import difflib
import glob
import os
import sys
from datetime import datetime
from typing import Optional

from open_clip_dissect.errors import InputError
from open_clip_dissect.openclip.launch import determinism, params
from open_clip_dissect.openclip.pipeline import keyed_data as data
from open_clip_dissect.openclip.state import checkpoint_files

FAILED_PREFIX = "failed-"


def check_model_name(name: str, flag: str = "--model") -> None:
    """A model config OpenCLIP knows (registered, ``local-dir:`` with its config file, or
    ``hf-hub:``, which only the download can check)."""
    import open_clip

    if name.startswith("hf-hub:"):
        return
    if name.startswith("local-dir:"):
        config = os.path.join(name[len("local-dir:") :], "open_clip_config.json")
        if not os.path.isfile(config):
            raise InputError(flag, f"{config} not found")
        return
    known = open_clip.list_models()
    if name.replace("/", "-") not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (open_clip.list_models() lists them)"
        raise InputError(flag, f"unknown model config {name!r}{hint}")


def check_pretrained(model: str, pretrained: Optional[str]) -> None:
    """``--pretrained``: a tag OpenCLIP knows for the model, or a local file (as ``create_model``)."""
    import open_clip

    if not pretrained or ":" in model or os.path.exists(pretrained):
        return
    if not open_clip.get_pretrained_cfg(model, pretrained):
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise InputError(
            "--pretrained", f"{pretrained!r} is neither a file nor a tag of {model} (tags: {', '.join(tags) or 'none'})"
        )


def check_run_inputs(args) -> None:
    """Everything the training flags name that can be checked before the run starts."""
    check_model_name(args.model)
    check_pretrained(args.model, args.pretrained)
    for flag, name in (("--oracle-model", args.oracle_model), ("--distill-model", args.distill_model)):
        if name:
            check_model_name(name, flag)
    data.check_data_inputs(args)
    checkpoint_files.check_resume(args.resume)
    check_run_folder(args)


def check_run_folder(args) -> None:
    """``--name`` of a folder that already holds a run (its ``out.log``) is refused by OpenCLIP
    with a line that names neither the folder nor ``--resume latest``: refused here instead."""
    if args.name is None or args.resume == "latest" or not args.logs:
        return
    folder = os.path.join(args.logs, args.name)
    logs = glob.glob(os.path.join(glob.escape(folder), "out-*")) if args.log_local else []
    if os.path.exists(os.path.join(folder, "out.log")) or logs:
        raise InputError(
            "--name",
            f"{folder} already holds a run (its out.log); pass a new --name, or --resume latest to continue that run",
        )


def set_failed_attempt_aside(args) -> Optional[str]:
    """Move what a failed attempt wrote in its run folder to ``<folder>/failed-<time>/`` when the
    folder holds no checkpoint; return that folder, or None when nothing was moved (no log was
    written by this process, or a checkpoint makes the folder a run to resume)."""
    log_path = getattr(args, "log_path", None)
    if not log_path or getattr(args, "rank", 0) != 0 or not os.path.exists(log_path):
        return None
    run_dir = os.path.dirname(log_path)
    if glob.glob(os.path.join(glob.escape(run_dir), "checkpoints", "**", "*.pt"), recursive=True):
        return None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target, n = os.path.join(run_dir, FAILED_PREFIX + stamp), 1
    while os.path.exists(target):
        target, n = os.path.join(run_dir, f"{FAILED_PREFIX}{stamp}-{n}"), n + 1
    os.makedirs(target)
    for entry in sorted(os.listdir(run_dir)):
        if not entry.startswith(FAILED_PREFIX):
            os.replace(os.path.join(run_dir, entry), os.path.join(target, entry))
    return target


class RunAttempt:
    """The run's flags as OpenCLIP's ``main`` parses them (``parse_args`` stands in for
    upstream's), kept so that a failure can find the run folder OpenCLIP then named."""

    def __init__(self):
        self.args = None

    def parse_args(self, argv):
        args = params.parse_args(argv)
        check_run_inputs(args)
        determinism.request(args.deterministic)  # before the model is built: its kernels are chosen once
        params.warn_slow_settings(args)
        self.args = args
        return args

    def failed(self, exn: BaseException) -> None:
        """After ``exn`` ended the run: set its files aside (see the module) and say where."""
        if isinstance(exn, SystemExit) and exn.code in (0, None):
            return
        target = set_failed_attempt_aside(self.args)
        if target:
            print(
                f"open_clip_dissect: this failed attempt wrote no checkpoint; its files are now in {target} "
                f"and the same command can run again",
                file=sys.stderr,
            )
