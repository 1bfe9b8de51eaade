"""Subprocess runners: `run.py` (the Hydra CLI), the installed `segkit` console script and
`python -c` scripts, with the environment variables the tests point them with. A Job is one
started process: tests start several at once where they are independent, then wait."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.paths import ROOT

RUN_PY = ROOT / "run.py"
SEGKIT = Path(sys.executable).parent / "segkit"


def cli_env(uri: str | None = None, data: Path | str | None = None,
            **extra: str) -> dict[str, str]:
    """os.environ with MLFLOW_TRACKING_URI=``uri`` and SEGKIT_DATA_DIR=``data`` when given,
    plus ``extra``; TF's C++ logging quiet unless set otherwise."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, **extra}
    if uri is not None:
        env["MLFLOW_TRACKING_URI"] = uri
    if data is not None:
        env["SEGKIT_DATA_DIR"] = str(data)
    return env


class Job:
    """A started subprocess with text pipes (``merge``: stderr into stdout); wait() gives its
    CompletedProcess (once finished, the same one again) and ``seconds`` from start to end."""

    def __init__(self, cmd: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, merge: bool = False):
        self.started = time.perf_counter()
        self.seconds: float | None = None
        self._result: subprocess.CompletedProcess | None = None
        self.proc = subprocess.Popen(
            cmd, env=cli_env() if env is None else env, cwd=cwd, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE)

    @classmethod
    def run_py(cls, *args: object, **kw) -> Job:
        """`python run.py *args`."""
        return cls([sys.executable, str(RUN_PY), *map(str, args)], **kw)

    @classmethod
    def segkit(cls, *args: object, **kw) -> Job:
        """The installed `segkit` console script (pass ``cwd`` so that no default store in
        the checkout is touched)."""
        assert SEGKIT.is_file(), "run `pip install -e .`: the segkit console script is missing"
        return cls([str(SEGKIT), *map(str, args)], **kw)

    @classmethod
    def python(cls, code: str, *args: object, env: dict[str, str] | None = None, **kw) -> Job:
        """`python -c code *args` in the checkout, which is on its PYTHONPATH (so a script
        can import segkit and tests.helpers)."""
        env = {**(cli_env() if env is None else env), "PYTHONPATH": str(ROOT)}
        return cls([sys.executable, "-c", code, *map(str, args)], env=env, cwd=ROOT, **kw)

    def wait(self, timeout: float = 600) -> subprocess.CompletedProcess:
        """Its CompletedProcess; killed (and TimeoutExpired raised) after ``timeout`` s."""
        if self._result is None:
            try:
                out, err = self.proc.communicate(timeout=timeout)
            finally:
                self.kill()
            self.seconds = time.perf_counter() - self.started
            self._result = subprocess.CompletedProcess(self.proc.args, self.proc.returncode,
                                                       out, err)
        return self._result

    def kill(self) -> None:
        """Kill it if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def run_py(*args: object, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """`python run.py *args`, waited for."""
    return Job.run_py(*args, **kw).wait(timeout)


def segkit_cli(*args: object, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """The `segkit` console script, waited for."""
    return Job.segkit(*args, **kw).wait(timeout)


def run_python(code: str, *args: object, timeout: float = 600,
               **kw) -> subprocess.CompletedProcess:
    """`python -c code *args` in the checkout, waited for."""
    return Job.python(code, *args, **kw).wait(timeout)
