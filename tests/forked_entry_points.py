"""Run the command-line entry points many times in little time.

A fresh interpreter spends about 7 s of CPU importing torch and OpenCLIP before it reads its
first flag. ``EntryPoints`` starts one server process that imports them once; each ``run``
forks it and the copy runs the module as ``python -m MODULE ARGV...`` does (``runpy``, ``sys.exit``,
an uncaught exception printed with its traceback, exit status 1), its stdout and stderr in files.
The server itself never computes with torch, so a fork starts from a clean state.

A run may add ``PYTHONPATH`` entries that hold the project's packages or modules the server
never imported (a patched copy of ``open_clip_train``, a copy of ``open_clip_dissect`` with one
more strategy, a test's own script): the copy puts them first on ``sys.path`` and forgets its
``open_clip_train`` and ``open_clip_dissect``, which then import from there, as in a fresh
interpreter. ``reimportable`` says which entries qualify; other ones need a fresh interpreter.

``shared()`` is the one server of a test session (``conftest.run_module`` sends the entry points
to it); a test that needs a server of its own may still make one.
"""

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from types import SimpleNamespace

PRELOAD = (
    "torch",
    "open_clip",
    "open_clip_train.main",
    "pandas",
    "webdataset",
    "open_clip_dissect.openclip.launch.main",
    "open_clip_dissect.cli",
    "matplotlib.pyplot",  # the plot of --selection-record: about 1.4 s of imports a run
    "pyarrow.parquet",
)


class EntryPoints:
    def __init__(self, env=None):
        full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.server = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.folder = tempfile.mkdtemp(prefix="entry-points-")
        self.runs = 0

    def run(self, module, args, cwd, timeout=300, env=None):
        """``(returncode, stdout, stderr)`` of ``python -m module args`` in ``cwd``, with ``env``
        added to the server's environment."""
        self.runs += 1
        out, err = (os.path.join(self.folder, f"{self.runs}.{name}") for name in ("out", "err"))
        request = {
            "module": module,
            "argv": [str(a) for a in args],
            "cwd": str(cwd),
            "env": {k: str(v) for k, v in (env or {}).items()},
            "stdout": out,
            "stderr": err,
        }
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        child = json.loads(self.server.stdout.readline())["pid"]
        ready, _, _ = select.select([self.server.stdout], [], [], timeout)
        if not ready:
            try:  # the copy leads its own process group: its data loader workers go with it
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.close()
            raise TimeoutError(f"{module} {args} ran past {timeout} s")
        reply = json.loads(self.server.stdout.readline())
        with open(out) as f_out, open(err) as f_err:
            return SimpleNamespace(returncode=reply["returncode"], stdout=f_out.read(), stderr=f_err.read())

    def close(self):
        self.server.kill()
        self.server.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def alive(self):
        return self.server.poll() is None


# The packages a copy forgets when a PYTHONPATH entry is added: the project's and the upstream one
# it wraps (they import each other; third-party modules never import them).
REIMPORTED = ("open_clip_dissect", "open_clip_train")
# Read by the interpreter at start-up, before any fork: only a fresh one honours them.
STARTUP_MODULES = ("sitecustomize", "usercustomize")


def top_level_names(entry: str) -> set:
    """The top-level modules and packages a ``sys.path`` entry (a folder) provides."""
    if not os.path.isdir(entry):
        return set()
    names = set()
    for name in os.listdir(entry):
        path = os.path.join(entry, name)
        if name.endswith(".py"):
            names.add(name[:-3])
        elif os.path.isdir(path) and name.isidentifier():
            names.add(name)
    return names


def provided_names(pythonpath: str) -> set:
    """The top-level modules and packages that the entries of ``pythonpath`` provide."""
    return set().union(*(top_level_names(entry) for entry in pythonpath.split(os.pathsep) if entry))


def reimportable(pythonpath: str) -> bool:
    """Whether a copy can honour ``pythonpath``: its entries provide only the ``REIMPORTED``
    packages and modules that this interpreter cannot import (so the server never did)."""
    import importlib.util

    return not any(
        name in STARTUP_MODULES or (name not in REIMPORTED and importlib.util.find_spec(name) is not None)
        for name in provided_names(pythonpath)
    )


def _import_from(pythonpath: str) -> None:
    """As a fresh interpreter started with ``PYTHONPATH=pythonpath`` would: its entries on
    ``sys.path`` after the script's folder, and the ``REIMPORTED`` packages imported anew."""
    import importlib

    sys.path[1:1] = [entry for entry in pythonpath.split(os.pathsep) if entry]
    for name in list(sys.modules):
        if name.split(".")[0] in REIMPORTED:
            del sys.modules[name]
    importlib.invalidate_caches()


_SHARED = None


def shared():
    """The session's server, started on first use (again if a timeout closed it)."""
    global _SHARED
    if _SHARED is None or not _SHARED.alive:
        _SHARED = EntryPoints()
        atexit.register(_SHARED.close)
    return _SHARED


def redirect_output(stdout: str, stderr: str) -> None:
    """This process's file descriptors 1 and 2, and ``sys.stdout``/``sys.stderr``, into files."""
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def _child(request) -> None:
    """Run one request in this forked process; never returns."""
    import runpy
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)
        os.environ.update(request["env"])
        if request["env"].get("PYTHONPATH"):
            _import_from(request["env"]["PYTHONPATH"])
        redirect_output(request["stdout"], request["stderr"])
        sys.stdin = open(os.devnull)
        os.chdir(request["cwd"])
        sys.argv = [request["module"], *request["argv"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exn:  # as the interpreter maps sys.exit's argument
            if exn.code is None or isinstance(exn.code, int):
                code = exn.code or 0
            else:
                print(exn.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - an uncaught exception: traceback, status 1
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    import importlib

    import matplotlib

    matplotlib.use("Agg")  # as the record's plot does; before pyplot picks a backend
    for name in PRELOAD:
        importlib.import_module(name)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
