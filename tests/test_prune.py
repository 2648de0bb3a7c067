"""What a sweep keeps on disk: the ``keep_checkpoints`` key, Ray's own checkpoint manager
configured from it, and how ``prune`` finds a trial's best checkpoint in Tune's results."""

from __future__ import annotations

import json

import pytest


def _spec(**keys):
    from sweeps.spec import SweepSpec

    spec = {"name": "k", "kind": "ablation", "control": "a", "arms": {"a": []}, **keys}
    return SweepSpec.model_validate(spec)


def test_keep_checkpoints_is_validated_in_one_line(tmp_path):
    from hrm_core.errors import UserError
    from sweeps.spec import load_spec

    path = tmp_path / "k.yaml"
    path.write_text("name: k\nkind: ablation\ncontrol: a\narms: {a: []}\nkeep_checkpoints: most\n")
    with pytest.raises(UserError) as err:
        load_spec(str(path))
    assert str(err.value) == (f"{path}: keep_checkpoints: give best, last, all or a number of "
                              "checkpoints >= 1 (got 'most')")
    with pytest.raises(UserError, match="override 'keep_checkpoints=0'"):
        load_spec(str(path), overrides=["keep_checkpoints=0"])
    assert load_spec(str(path), overrides=["keep_checkpoints=3"])[0].keep_checkpoints == 3


@pytest.mark.parametrize("keep, kept", [("best", [1, 3]), ("last", [3]), (2, [2, 3]), ("all", [0, 1, 2, 3])])
def test_tune_keeps_what_the_sweep_asks(tmp_path, keep, kept):
    """Ray's own checkpoint manager, configured from the sweep file: scores 0.5, 0.9, 0.3, 0.4."""
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _CheckpointManager, _TrainingResult

    from sweeps.tuner import checkpoint_config
    from trainables.tune_sink import SCORE

    manager = _CheckpointManager(checkpoint_config(_spec(keep_checkpoints=keep)))
    for i, score in enumerate([0.5, 0.9, 0.3, 0.4]):
        folder = tmp_path / f"checkpoint_{i:06d}"
        folder.mkdir()
        (folder / "state.pt").write_bytes(b"x")
        manager.register_checkpoint(_TrainingResult(Checkpoint(str(folder)), {SCORE: score}))
    assert sorted(int(p.name[-1]) for p in tmp_path.iterdir()) == kept


def test_best_checkpoint_reads_tune_results():
    from sweeps.prune import best_checkpoint

    lines = [{"checkpoint_dir_name": "checkpoint_000000", "m": 0.2}, {"m": 0.9},
             {"checkpoint_dir_name": "checkpoint_000001", "m": 0.7},
             {"checkpoint_dir_name": "checkpoint_000002", "m": float("nan")}]
    text = "\n".join(json.dumps(x) for x in lines)
    assert best_checkpoint(text, "m", "max") == "checkpoint_000001"
    assert best_checkpoint(text, "m", "min") == "checkpoint_000000"
    assert best_checkpoint(text, "other", "max") is None


# The end-to-end half (a real sweep's folders, list, prune, reproduce after it) rides on the
# sweep trial of tests/test_reproduce.py: test_a_pruned_invocation_lists_refuses_and_reproduces.


def test_sizes_read_like_du_si():
    from sweeps.storage import human_bytes, is_checkpoint_file

    assert [human_bytes(n) for n in (999, 197_900, 3_800_000, 66 * 10**9)] == ["999 B", "197.9 kB", "3.8 MB",
                                                                               "66.0 GB"]
    assert is_checkpoint_file("trial_1/checkpoint_000003/state.pt")
    assert is_checkpoint_file("trial_1/hrm/step_16.pt") and is_checkpoint_file("trial_1/hrm/restore/state.pt")
    assert not is_checkpoint_file("trial_1/result.json") and not is_checkpoint_file("trial_1/hrm/best.json")
