"""Scale: DDP trials (Ray Train's TorchTrainer inside the Tune function), fractional GPUs,
and ``--extend``. A real local Ray with logical CPUs and GPUs, a real MLflow store, the
tiny model on 4x4 Sudoku; nothing touches CUDA."""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time

import pytest

from hrm_core import names
from tests.conftest import child_runs as children
from tests.conftest import no_duplicate_points as steps_of
from tests.conftest import registered_checkpoint
from tests.conftest import write_sweep as write
from trainables import faults
from trainables.resources import (
    DRIVER_MEMORY,
    check_fits,
    max_concurrent_trials,
    pick_device,
    trial_resources,
)

SMOKE = "scale: smoke\n"


class Res:
    def __init__(self, cpu=1.0, gpu=0.0, workers=1):
        self.cpu, self.gpu, self.workers = cpu, gpu, workers


# --- resources and device: no Ray needed -------------------------------------------------------
def test_trial_resources_shapes():
    assert trial_resources(Res(2, 0.5)) == {"cpu": 2.0, "gpu": 0.5}
    pgf = trial_resources(Res(1, 1, workers=4))
    assert pgf.bundles == [{"memory": DRIVER_MEMORY}], \
        "no CPU for the driver; the workers' bundles are Train's own"
    with pytest.raises(Exception, match="one whole GPU"):
        trial_resources(Res(1, 0.5, workers=2))
    with pytest.raises(Exception, match="whole number"):
        trial_resources(Res(1, 1.5))


def test_cluster_fit_and_concurrency_cap():
    cluster = {"CPU": 8.0, "GPU": 4.0}
    assert max_concurrent_trials(Res(1, 1, workers=2), 8, cluster) == 2  # 4 GPUs / 2 per trial
    assert max_concurrent_trials(Res(3, 0, workers=2), 8, cluster) == 1  # 8 CPUs / 6 per trial
    assert max_concurrent_trials(Res(1, 0.5), 8, cluster) == 8  # Tune itself packs 1-process trials
    check_fits(Res(1, 1, workers=4), cluster)
    with pytest.raises(Exception, match="needs 6 GPUs"):
        check_fits(Res(1, 1, workers=6), cluster)


def test_device_choice():
    idle = "device=cpu although the trial holds GPU share(s) ['0']: they stay idle"
    assert pick_device("cpu", ["0"], cuda_available=False) == ("cpu", idle)
    assert pick_device("auto", [], cuda_available=True) == ("cpu", None)
    assert pick_device("auto", ["1"], cuda_available=True) == ("cuda", None)
    with pytest.raises(Exception, match="torch sees no CUDA device") as err:
        pick_device("auto", ["0"], cuda_available=False)
    assert "\n" not in str(err.value)
    with pytest.raises(Exception, match="holds no GPU"):
        pick_device("cuda", [], cuda_available=True)


# --- end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_scale():
    """Head + 2 DDP workers need > 2 CPUs and the placement test 2 GPUs: both logical."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def scale_runner(monkeypatch, ray_scale):
    """The runner, with resources checked against the running Ray (its logical GPUs), not
    torch's device count."""
    import sweeps.runner as runner
    import sweeps.validate as validate
    from hrm_core.errors import UserError

    def check_resources(spec, path):
        try:
            check_fits(spec.resources, ray_scale.cluster_resources(), "the test's Ray")
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
        return "the test's Ray"

    monkeypatch.setattr(validate, "check_resources", check_resources)
    return runner


DDP_SWEEP = """\
name: scale_ddp
kind: ablation
base: [data=sudoku4, max_steps=24, eval_every_steps=6, lr=0.001, arch.halt_exploration_prob=0.0]
control: a
arms:
  a: []
seeds: [0]
resources: {cpu: 1, workers: 2}
max_failures: 2
"""


@pytest.mark.slow
def test_two_worker_ddp_trial_restores_and_matches_one_process(scale_runner, store, tmp_path, monkeypatch):
    """A 2-rank gloo TorchTrainer trial, its rank 0 SIGKILLed after its first checkpoint:
    Tune retries it from that checkpoint (every rank its own file), it completes in
    MLflow with every step once, and its weights agree with a 1-process run's."""
    from hrm_core.train import checkpoint as ckpt
    from hrm_core.train.trainer import Trainer
    from sweeps.spec import load_spec
    from trainables.trial import SWEEP_KEY, TRIAL_KEY, trial_setup

    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    monkeypatch.setenv(faults.ENV, json.dumps({"pid_dir": str(pid_dir)}))
    path = write(tmp_path, DDP_SWEEP + SMOKE)
    killed = {}

    def killer():
        deadline, pid_file = time.time() + 240, pid_dir / "a-0.pid"
        while time.time() < deadline and not killed:
            if pid_file.exists() and registered_checkpoint(store, "scale_ddp", "a"):
                pid = int(pid_file.read_text().split()[0])
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed["pid"] = pid
                except ProcessLookupError:
                    return
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    parent_id = scale_runner.run_sweep(path, log=lambda *_: None)
    thread.join()
    assert killed, "rank 0 was never killed"

    (kid,) = children(store, parent_id)
    assert kid.info.status == "FINISHED" and kid.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
    assert kid.data.tags["hrm.workers"] == "2"
    assert steps_of(store, kid.info.run_id) == list(range(1, 25)), "per-step metrics, each step once"
    assert steps_of(store, kid.info.run_id, "val/accuracy") == [6, 12, 18, 24]  # sudoku4 has a val split
    assert steps_of(store, kid.info.run_id, "eval/accuracy") == [24]  # test: the final step only
    resumed = store.get_metric_history(kid.info.run_id, names.RESUMED_FROM_STEP)
    assert resumed and resumed[0].value >= 6, "the retried trial restored from its Tune checkpoint"

    # The trial's final Tune checkpoint holds every rank's state.
    final = max((tmp_path / "ray").glob("**/train_hrm*/checkpoint_*"),
                key=lambda p: int(p.name.split("_")[-1]))
    assert {p.name for p in final.iterdir()} == {"state.pt", "state.rank1.pt"}
    two = ckpt.load(str(final / "state.pt"))
    assert two["step"] == 24

    # The same configuration in one process (no Ray): the weights agree up to the order of
    # floating-point sums (all-reduce of two halves vs one batch).
    spec, _ = load_spec(path)
    config = {SWEEP_KEY: {"base": list(spec.base), "name": spec.name},
              TRIAL_KEY: {"arm": "a", "overrides": ["seed=0"]}}
    cfg, device, _, _ = trial_setup(config, [], cpus=1)
    run_dir = str(tmp_path / "one")
    cfg = cfg.model_copy(update={"checkpoint_path": run_dir})
    one = Trainer(cfg, cfg.data_path, run_dir, device, [], log=lambda *_: None)
    one.fit()
    worst = max((a.float() - two["model"][k].float()).abs().max().item()
                for k, a in one.model.state_dict().items())
    assert worst < 1e-4, worst


@pytest.mark.slow
def test_fractional_gpus_pack_two_trials_per_gpu(scale_runner, store, tmp_path):
    """gpu: 0.5 on 2 logical GPUs: 4 trials run at once, two on each GPU. The trials run
    on the CPU because the sweep says device=cpu (the GPU shares then idle, with a warning)."""
    path = write(tmp_path, """\
name: scale_frac_gpu
kind: ablation
base: [data=sudoku4, max_steps=12, eval_every_steps=12, device=cpu]
control: a
arms:
  a: []
  b: [lr=0.002]
seeds: [0, 1]
max_concurrent: 4
resources: {cpu: 1, gpu: 0.5}
""" + SMOKE)
    parent_id = scale_runner.run_sweep(path, log=lambda *_: None)
    kids = children(store, parent_id)
    assert len(kids) == 4 and all(k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED for k in kids)
    gpus = collections.Counter(k.data.tags.get("hrm.gpu_ids") for k in kids)
    assert gpus == {"0": 2, "1": 2}, gpus
    assert all("device=cpu" in k.data.tags["hrm.hardware"] for k in kids)
    starts, ends = [k.info.start_time for k in kids], [k.info.end_time for k in kids]
    assert max(starts) < min(ends), "the four trials ran at the same time"


@pytest.mark.slow
def test_extend_adds_only_the_new_seed(ray_scale, store, tmp_path):
    """Seeds are added in the file; the invocation's command-line overrides are recorded and
    re-applied by --extend and resume, which take none of their own."""
    from hrm_core.errors import UserError
    from sweeps.extend import extend_sweep
    from sweeps.overrides import record
    from sweeps.runner import resume_sweep, run_sweep

    sweep = """\
name: scale_extend
kind: ablation
base: [data=sudoku4, eval_every_steps=6]
control: a
arms:
  a: []
  b: [lr=0.002]
seeds: [0]
max_concurrent: 4
""" + SMOKE
    path = write(tmp_path, sweep)
    parent_id = run_sweep(path, overrides=["max_steps=6"], log=lambda *_: None)  # the smoke preset says 24
    assert store.get_run(parent_id).data.tags[names.TAG_SWEEP_OVERRIDES] == record(["max_steps=6"])
    before = {k.info.run_id: (k.info.end_time, len(store.get_metric_history(k.info.run_id, "train/lm_loss")))
              for k in children(store, parent_id)}
    assert len(before) == 2

    with pytest.raises(UserError, match=r"--extend takes no overrides"):
        extend_sweep(path, overrides=["seeds=[0, 1]"], log=lambda *_: None)
    write(tmp_path, sweep.replace("seeds: [0]", "seeds: [0, 1]"))
    assert extend_sweep(path, log=lambda *_: None) == parent_id
    parent = store.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[names.TAG_SWEEP_STATUS] == "finished"
    kids = children(store, parent_id)
    pairs = sorted((k.data.tags[names.TAG_ARM], k.data.tags[names.TAG_SEED]) for k in kids)
    assert pairs == [("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")], "arms x 2 seeds, no pair twice"
    for k in kids:
        assert k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
        assert k.data.tags[names.TAG_MLFLOW_PARENT] == parent_id
        if k.info.run_id in before:  # untouched: same end time, same points
            points = len(store.get_metric_history(k.info.run_id, "train/lm_loss"))
            assert (k.info.end_time, points) == before[k.info.run_id]
        else:  # max_steps=6 re-applied
            assert k.data.tags[names.TAG_SEED] == "1" and steps_of(store, k.info.run_id) == list(range(1, 7))

    # Nothing new: nothing runs.
    assert extend_sweep(path, log=lambda *_: None) == parent_id
    assert len(children(store, parent_id)) == 4
    # resume applies the recorded overrides too: one that no longer validates stops it, named
    store.set_tag(parent_id, names.TAG_SWEEP_OVERRIDES, record(["max_stepz=6"]))
    with pytest.raises(UserError, match=r"override 'max_stepz=6'.*did you mean 'max_steps'"):
        resume_sweep(path, parent_id, log=lambda *_: None)
    store.set_tag(parent_id, names.TAG_SWEEP_OVERRIDES, record(["max_steps=6"]))
    # A changed arm is refused, in one line.
    write(tmp_path, sweep.replace("seeds: [0]", "seeds: [0, 1, 2]").replace("[lr=0.002]", "[lr=0.003]"))
    with pytest.raises(UserError, match=r"arms\.b changed"):
        extend_sweep(path, log=lambda *_: None)
    assert len(children(store, parent_id)) == 4
