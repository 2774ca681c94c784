"""The real CLI in a fresh process per command, without paying its imports every time.

``run_cli`` (conftest.py) starts ``python -m onnxsmith``, which spends about two seconds
importing onnx, onnx_ir, ml_dtypes and onnxruntime before it looks at its arguments. The
hostile-input corpus and the fuzz test run a hundred commands or more, so they use a fork
server instead: one process imports those libraries once and forks a child per command.
The child is a real process running the console entry point (``onnxsmith.cli.main.run``)
with its own argv, environment (``PYTHONPATH`` included), working folder, stdin (``/dev/null``) and stdout/stderr
files, so exit codes, one-line errors, crashes and leftovers are what a user would see.
The server never creates a session or a thread before forking, so the child starts as
clean as ``python -m onnxsmith`` does, only without the import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from conftest import CliResult

__all__ = ["CONTROL", "ForkedCli", "snapshot"]

# What must never reach a terminal raw from a model or a data file (issue 17 item 5).
CONTROL = {chr(c) for c in range(32) if chr(c) not in "\n\t"} | {"\x7f"}

_SERVER = r"""
import json, os, signal, sys, time, traceback
import numpy, onnx, onnx_ir, onnxruntime, onnxscript, yaml  # the import time paid once
import onnxsmith.cli.main as cli_main
import onnxsmith.optimize, onnxsmith.sources, onnxsmith.data, onnxsmith.recipe

protocol = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing the server prints can reach the protocol
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush(); protocol.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            os.chdir(request["cwd"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
            os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            os.environ.clear()
            os.environ.update(request["env"])
            sys.path[1:1] = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
            sys.argv = ["onnxsmith", *request["args"]]
            cli_main.run()
            code = 0
        except SystemExit as e:
            if isinstance(e.code, int) or e.code is None:
                code = e.code or 0
            else:
                sys.stderr.write(f"{e.code}\n")
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = time.monotonic() + request["timeout"]
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    try:
        os.killpg(pid, signal.SIGKILL)  # whatever the command left running (batch workers)
    except ProcessLookupError:
        pass
    code = os.waitstatus_to_exitcode(status)
    protocol.write(json.dumps({"code": code, "timed_out": timed_out}) + "\n")
    protocol.flush()
"""


class ForkedCli:
    """A running fork server; call it like ``run_cli``. One command at a time (a lock)."""

    def __init__(self) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="onnxsmith-cli-"))
        self._lock = threading.Lock()
        self._process = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, bufsize=1)

    def __call__(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                 timeout: float = 120) -> CliResult:
        """Run ``onnxsmith ARGS`` in a forked child; a child past ``timeout`` seconds is killed (code -9)."""
        out, err = self._scratch / "stdout", self._scratch / "stderr"
        request = {"args": list(args), "cwd": str(cwd or Path.cwd()), "env": {**os.environ, **(env or {})},
                   "stdout": str(out), "stderr": str(err), "timeout": timeout}
        with self._lock:
            assert self._process.stdin and self._process.stdout
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            reply = self._process.stdout.readline()
            if not reply:
                raise RuntimeError("the CLI fork server died")
            answer = json.loads(reply)
            stdout = out.read_text(errors="replace")
            stderr = err.read_text(errors="replace")
        if answer["timed_out"]:
            stderr += f"\n[killed after {timeout} s]"
        return CliResult(answer["code"], stdout, stderr)

    def close(self) -> None:
        """Stop the server and remove its scratch files."""
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for name in ("stdout", "stderr"):
            (self._scratch / name).unlink(missing_ok=True)
        self._scratch.rmdir()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: files by sha256, links by target, folders and others by kind (never opened)."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[rel] = ("folder",)
            elif path.is_file():
                entries[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                entries[rel] = ("other",)
    return entries
