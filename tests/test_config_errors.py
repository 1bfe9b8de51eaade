"""Config mistakes Hydra or OmegaConf catch while composing: one line naming the key (or
the file, line and column) and the fix, exit 2, no MLflow store touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Job, cli_env, run_py

pytestmark = pytest.mark.e2e  # each test starts run.py


def _run(tmp_path: Path, *args: str, **kw):
    """run.py with ``args``, data and store pointing nowhere."""
    return run_py(*args, "data.root=/nonexistent", f"hydra.run.dir={tmp_path}/out",
                  env=cli_env(uri=f"sqlite:///{tmp_path}/never.db"), timeout=120, **kw)


MISTAKES = [
    (("modle.depth=3",), "error: modle is not a config key (did you mean model?)"),
    (("trainer=nope",), "error: trainer=nope is not an option: use one of default"),
    (("seed=1,2",), "error: seed=1,2 has several values: add -m to sweep over them"),
    (("trainer.epochs=abc",), "error: trainer.epochs='abc' must be an integer"),
    (("trainer.batch_size=abc",), "error: trainer.batch_size='abc' must be an integer"),
    (("model.filters=abc",), "error: model.filters='abc' must be an integer"),
    (("optimizer.lr=abc",), "error: optimizer.lr='abc' must be a number"),
    (("eval.threshold=abc",), "error: eval.threshold='abc' must be a number"),
    (("+model.filter=32",), "error: model.filter is not an option here"),
    (("model.depth=${oc.env:SEGKIT_TEST_UNSET_VARIABLE}",),
     "error: model.depth: Environment variable 'SEGKIT_TEST_UNSET_VARIABLE' not found"),
]


@pytest.fixture(scope="module")
def mistake_jobs(tmp_path_factory):
    """run.py with each of MISTAKES, all started at once (they are independent and each
    spends its life in one core's imports): {args: (job, its folder)}."""
    jobs = {}
    for args, _ in MISTAKES:
        tmp = tmp_path_factory.mktemp("mistake")
        jobs[args] = (Job.run_py(*args, "data.root=/nonexistent", f"hydra.run.dir={tmp}/out",
                                 env=cli_env(uri=f"sqlite:///{tmp}/never.db")), tmp)
    yield jobs
    for job, _ in jobs.values():
        job.kill()


@pytest.mark.parametrize("args, expected", MISTAKES)
def test_config_mistakes_are_one_line_and_exit_2(mistake_jobs, args, expected):
    job, tmp_path = mistake_jobs[args]
    res = job.wait(timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    out = (res.stdout + res.stderr).strip().splitlines()
    assert len(out) == 1 and out[0].startswith(expected), out
    assert not (tmp_path / "never.db").exists()


def test_a_broken_yaml_file_names_its_line_and_column(tmp_path):
    """The broken file lives in a config folder of the test's own (on Hydra's search path,
    named relative to the working folder as conf/ is), not in the checkout's conf/, where
    other tests running beside it would compose it."""
    extra = tmp_path / "conf" / "experiment"
    extra.mkdir(parents=True)
    (extra / "broken_by_test.yaml").write_text("model:\n  depth: [1, 2\n  filters: 3\n")
    res = _run(tmp_path, "experiment=broken_by_test",
               f"hydra.searchpath=[file://{tmp_path / 'conf'}]", cwd=tmp_path)
    assert res.returncode == 2
    out = (res.stdout + res.stderr).strip().splitlines()
    assert out == ["error: conf/experiment/broken_by_test.yaml:3:10: YAML syntax error: "
                   "expected ',' or ']', but got ':'; fix the file"], out
