"""A compiled trial that ran second in a reused sweep worker (so on that process's cached compiled
code) reproduces bitwise when run alone with the same settings: a real local Ray sweep, a real
SQLite store, ``python -m sweeps reproduce`` in this process (which compiles anew from the disk
cache). See hrm_core/train/compiled.py. One H and one L step per segment keep the graphs, and so
the first compile on a fresh machine, small; one ACT step has no Q-target forward to compile."""

from __future__ import annotations

import glob
import os
import re

import pytest

from hrm_core import names
from tests.conftest import child_runs, write_sweep
from tests.test_reproduce import histories, run_reproduce, same

pytestmark = pytest.mark.usefixtures("ray_local")


def trial_pids(storage: str) -> dict[str, int]:
    """Each trial's worker process id, from the first line of its trial.log."""
    pids = {}
    for log in glob.glob(os.path.join(storage, "*", "*", "trial.log")):
        with open(log) as f:
            head = f.readline()
        arm = re.search(r"arm_(\w+?)_seed", os.path.basename(os.path.dirname(log))).group(1)
        pids[arm] = int(re.search(r"\(pid (\d+)\)", head).group(1))
    return pids


def test_a_compiled_trial_on_a_reused_worker_reproduces_bitwise(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from sweeps.runner import run_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = write_sweep(tmp_path, """\
name: compiled
kind: ablation
base: [data=sudoku4, compile=true, arch.H_cycles=1, arch.L_cycles=1, arch.halt_max_steps=1,
       max_steps=4, eval_every_steps=2]
control: first
arms:
  first: [lr=2e-3]
  second: [lr=1e-3]
seeds: [0]
max_concurrent: 1
scale: smoke
""")
    parent_id = run_sweep(path, log=lambda *_: None)
    client = MlflowClient(uri)
    runs = {r.data.tags[names.TAG_ARM]: r for r in child_runs(client, parent_id)}
    assert {arm: r.data.tags[names.TAG_OUTCOME] for arm, r in runs.items()} == {
        "first": names.OUTCOME_COMPLETED, "second": names.OUTCOME_COMPLETED}
    pids = trial_pids(str(tmp_path / "ray"))
    assert set(pids) == {"first", "second"} and pids["first"] == pids["second"], pids  # one reused worker

    second = runs["second"].info.run_id
    code, out = run_reproduce(capsys, second, "--tracking-uri", uri, "--out", str(tmp_path / "rep"),
                              "--strict")
    assert code == 0, out
    assert "verdict: bitwise identical" in out, out
    (rerun,) = client.search_runs([runs["second"].info.experiment_id],
                                  f"tags.`{names.TAG_REPRODUCES}` = '{second}'")
    original, again = histories(client, second), histories(client, rerun.info.run_id)
    assert names.TRAIN_LM_LOSS in original and names.EVAL_EXACT_ACCURACY in original
    for key, points in original.items():
        assert [s for s, _ in points] == [s for s, _ in again[key]], key
        assert all(same(a, b) for (_, a), (_, b) in zip(points, again[key], strict=True)), key


def test_past_the_graph_limit_a_compile_fails_instead_of_running_eager():
    import torch
    import torch._dynamo.config as dynamo

    from hrm_core.train.compiled import GRAPHS_PER_FUNCTION, prepare_compile

    prepare_compile()
    assert dynamo.recompile_limit >= GRAPHS_PER_FUNCTION

    def double(x):
        return x * 2

    # dynamo's own patch (monkeypatch would delete the config key on undo)
    with dynamo.patch(recompile_limit=1):  # what a process that ran many configs reaches
        fn = torch.compile(double, dynamic=False, backend="eager")
        assert fn(torch.ones(2)).tolist() == [2.0, 2.0]
        with pytest.raises(Exception, match="(?i)recompil"):  # a new shape past the limit: error, not eager
            fn(torch.ones(3))
    torch._dynamo.reset()
    assert dynamo.recompile_limit >= GRAPHS_PER_FUNCTION


def test_compile_without_a_cpp_compiler_is_one_line_before_the_sweep(tmp_path, monkeypatch):
    from hrm_core.errors import UserError
    from sweeps.prepare import prepare

    path = write_sweep(tmp_path, "name: nocc\nkind: ablation\nbase: [data=sudoku4, compile=true]\n"
                                 "control: a\narms:\n  a: []\nseeds: [0]\nscale: smoke\n")
    prepare(path, log=lambda *_: None)  # this machine has one
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(UserError, match=r"^compile=true: .*C\+\+ compiler.*compile=false$"):
        prepare(path, log=lambda *_: None)
    assert not (tmp_path / "ray").exists()  # nothing started
