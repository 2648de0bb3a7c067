"""Runs a person can read in the MLflow UI: child runs named by arm and seed (or sampled
params), unique within an invocation; MLflow's source tags; experiments tagged as training
runs with what they study; the dataset as an input; ``system/*`` metrics, which are
timings; the UI address of a run. Real SQLite stores throughout; the end-to-end checks of a
real sweep are ``assert_readable_sweep``, called by tests/test_sweeps_e2e.py's ablation."""

from __future__ import annotations

import json
import pickle
import subprocess
from types import SimpleNamespace

import pytest

from hrm_core import names
from tests.conftest import PROJECT


@pytest.fixture(scope="module")
def shared_uri(tmp_path_factory) -> str:
    """One real SQLite store for this module's tests (a new store costs seconds of migrations);
    each test keeps to its own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('readable') / 'mlflow.db'}"


# --- what a real sweep leaves (called on tests/test_sweeps_e2e.py's ablation) -------------------
def assert_readable_sweep(client, parent, kids, header: str) -> None:
    """The experiment, the parent run and every child run of a finished sweep read well."""
    from mlflow.tracking.context.default_context import DefaultRunContext

    from hrm_core.tracking.source import entry_point

    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags[names.TAG_MLFLOW_EXPERIMENT_KIND] == names.EXPERIMENT_KIND
    assert exp.tags[names.TAG_MLFLOW_NOTE].startswith(header), "the sweep file's header describes it"
    assert "Sweep file: `" in exp.tags[names.TAG_MLFLOW_NOTE]
    fluent = DefaultRunContext().tags()  # what mlflow.start_run would have set
    commit = parent.data.tags[names.TAG_GIT_COMMIT]
    for run in [parent, *kids]:
        tags = run.data.tags
        assert tags[names.TAG_MLFLOW_USER] == fluent[names.TAG_MLFLOW_USER] == run.info.user_id
        assert tags[names.TAG_MLFLOW_SOURCE_TYPE] == fluent[names.TAG_MLFLOW_SOURCE_TYPE] == "LOCAL"
        assert tags[names.TAG_MLFLOW_SOURCE_NAME] == entry_point()  # the driver: this pytest process
        if commit != "unknown":
            assert tags[names.TAG_MLFLOW_GIT_COMMIT] == commit
    for kid in kids:
        (entry,) = kid.inputs.dataset_inputs  # the runs table's Dataset column
        assert entry.dataset.name == "sudoku4" and entry.dataset.source_type == "local"
        assert entry.dataset.digest == kid.data.tags[names.TAG_DATASET_FINGERPRINT]
        assert {t.key: t.value for t in entry.tags} == {names.TAG_MLFLOW_DATA_CONTEXT: "train"}
        profile = json.loads(entry.dataset.profile)
        assert profile["train_examples"] > 0 and profile["test_examples"] > 0 and profile["seq_len"] == 16
        metrics = kid.data.metrics
        assert metrics[names.PERF_SAMPLES_PER_S] > 0, "perf/* reaches MLflow for sweep trials"
        assert metrics[names.SYSTEM_PROCESS_RSS] > 10 and names.SYSTEM_PROCESS_CPU in metrics
        assert names.SYSTEM_CPU in metrics
        system = [k for k in metrics if k.startswith(names.SYSTEM_PREFIX)]
        assert all(names.is_timing(k) for k in system + [names.PERF_SAMPLES_PER_S])
        # the first sample travels with the first step (then one every SYSTEM_INTERVAL_S)
        steps = [m.step for m in client.get_metric_history(kid.info.run_id, names.SYSTEM_PROCESS_RSS)]
        assert steps and min(steps) == 1 and len(steps) == len(set(steps))


# --- run names ----------------------------------------------------------------------------------
def test_run_names_read_as_arm_and_seed_or_as_the_sampled_params():
    assert names.ablation_run_name("gated_bias_-1", 3) == "gated_bias_-1/seed3"
    params = {"arch.gate_init_bias": -2.0001, "lr": 0.000312345, "arch.use_gating": True, "arch.H_cycles": 2}
    assert names.search_run_name(params) == "H_cycles=2,gate_init_bias=-2,use_gating=true,lr=0.000312"
    # two keys that end alike keep their whole names
    assert names.search_run_name({"arch.lr": 1.0, "lr": 0.5}) == "arch.lr=1,lr=0.5"
    long = names.search_run_name({f"arch.k{i}": 0.123456 for i in range(20)})
    assert len(long) == names.RUN_NAME_MAX and long.endswith("…")
    assert names.search_run_name({}) == "default"
    assert names.unique_run_name("a/seed0", set()) == "a/seed0"
    assert names.unique_run_name("a/seed0", {"a/seed0", "a/seed0 #2"}) == "a/seed0 #3"


def _trial(trial_id: str, **config):
    """What the logger reads of a Tune trial: its id and config."""
    return SimpleNamespace(trial_id=trial_id, config=config)


def test_child_run_names_stay_unique_when_an_extension_reruns_a_pair(shared_uri, tmp_path):
    """Two loggers under one parent run (the invocation, then an extension that reruns a
    failed pair): the rerun gets ``#2``; a trial that restarts keeps its run and name; a
    logger restored from Tune's pickle reads the names again."""
    from hrm_core.tracking.client import ensure_experiment, get_client
    from sweeps.mlflow_callback import MlflowTrialLogger

    uri = shared_uri
    client = get_client(uri)
    exp = ensure_experiment(client, names.experiment_name("readable"))
    parent = client.create_run(exp, run_name="readable@now").info.run_id

    def logger():
        return MlflowTrialLogger(uri, exp, parent, "readable", {}, spool_dir=str(tmp_path))

    first = logger()
    failed = _trial("t1", __trial={"arm": "a", "seed": 0})
    first.on_trial_start(0, [], failed)
    first.on_trial_start(0, [], _trial("t2", __trial={"arm": "b", "seed": 0}))
    first._end(failed, names.OUTCOME_ERROR)
    extension = logger()
    extension.on_trial_start(0, [], _trial("t9", __trial={"arm": "a", "seed": 0}))
    restored = pickle.loads(pickle.dumps(extension))
    restored.on_trial_restore(0, [], _trial("t9", __trial={"arm": "a", "seed": 0}))  # its own run again
    restored.on_trial_start(0, [], _trial("t10", __trial={"arm": "a", "seed": 0}))
    search = [_trial(f"s{i}", lr=0.01, __hrm={}) for i in range(2)]
    for trial in search:
        restored.on_trial_start(0, [], trial)
    runs = client.search_runs([exp], f"tags.`{names.TAG_INVOCATION}` = '{parent}'")
    by_trial = {r.data.tags[names.TAG_TRIAL_ID]: r.info.run_name for r in runs}
    assert by_trial == {"t1": "a/seed0", "t2": "b/seed0", "t9": "a/seed0 #2", "t10": "a/seed0 #3",
                        "s0": "lr=0.01", "s1": "lr=0.01 #2"}


# --- source tags, experiment kind and descriptions ------------------------------------------------
def test_source_tags_are_what_the_fluent_api_sets():
    from mlflow.tracking.context.default_context import DefaultRunContext

    from hrm_core.observe.provenance import git_commit
    from hrm_core.tracking.source import entry_point, source_tags

    assert entry_point(["x"], ["python", "-u", "-m", "sweeps", "run", "a"]) == "python -m sweeps"
    assert entry_point(["x"], ["python", "-X", "dev", "-mhrm_core.pretrain"]) == "python -m hrm_core.pretrain"
    # a script keeps sys.argv[0], as the fluent API does (even with "-m" among its own arguments)
    assert entry_point(["sweeps/ablate_gating.py"], ["python", "sweeps/ablate_gating.py", "-m", "x"]) \
        == "sweeps/ablate_gating.py"
    assert entry_point([""], ["python"]) == "<console>"
    tags, fluent = source_tags(), DefaultRunContext().tags()
    assert tags[names.TAG_MLFLOW_USER] == fluent[names.TAG_MLFLOW_USER]
    assert tags[names.TAG_MLFLOW_SOURCE_TYPE] == fluent[names.TAG_MLFLOW_SOURCE_TYPE]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True).stdout
    if git_commit() == "unknown":  # no git here: the tag is left out, as the fluent API leaves it
        assert names.TAG_MLFLOW_GIT_COMMIT not in tags
    else:
        assert tags[names.TAG_MLFLOW_GIT_COMMIT] == git_commit() == head.strip()


def test_experiments_open_on_training_runs_and_say_what_they_study(shared_uri, tmp_path):
    from hrm_core.tracking.client import ensure_experiment, get_client
    from hrm_core.tracking.describe import describe_experiment, file_header, report_note, sweep_note

    client = get_client(shared_uri)
    new = ensure_experiment(client, "hrm/new")
    kind_tag = names.TAG_MLFLOW_EXPERIMENT_KIND
    inferred = client.create_experiment("hrm/inferred", tags={kind_tag: "genai_development_inferred"})
    chosen = client.create_experiment("hrm/chosen", tags={kind_tag: "finetuning"})
    for name in ("hrm/inferred", "hrm/chosen"):
        ensure_experiment(client, name)
    kind = {e: client.get_experiment(e).tags[kind_tag] for e in (new, inferred, chosen)}
    assert kind == {new: names.EXPERIMENT_KIND, inferred: names.EXPERIMENT_KIND, chosen: "finetuning"}

    sweep = tmp_path / "s.yaml"
    sweep.write_text("\n# Gate bias: does it matter?\n# Two lines of prose.\n#   make sweep-x   # or this\n"
                     "name: s  # not the header\n# nor this\n")
    assert file_header(sweep) == "Gate bias: does it matter?\nTwo lines of prose.\n  make sweep-x   # or this"
    note = sweep_note(sweep, "More words.")
    assert note == ("Gate bias: does it matter?\nTwo lines of prose.\n\n    make sweep-x   # or this\n\n"
                    f"More words.\n\nSweep file: `{sweep}`")
    describe_experiment(client, new, note)
    assert client.get_experiment(new).tags[names.TAG_MLFLOW_NOTE] == note
    long = report_note("x" * 9000, "report/report.html")
    assert len(long) <= 5000 and long.endswith("Report: `report/report.html` (this run's artifacts)")


def test_run_url_opens_the_run_in_the_ui():
    from hrm_core.tracking.ui import DEFAULT_UI_URL, TRAINING_VIEW, run_url

    assert DEFAULT_UI_URL == "http://127.0.0.1:5000"  # `make mlflow-ui`
    view = TRAINING_VIEW  # the training-runs pages, not the GenAI ones
    assert run_url("sqlite:////x/mlflow.db", "3", "abc") == f"http://127.0.0.1:5000/#/experiments/3/runs/abc{view}"
    assert run_url("sqlite:///m.db", "3", "abc", ui_url="http://h:1/") == f"http://h:1/#/experiments/3/runs/abc{view}"
    # a tracking server serves its own UI; its password never reaches a printed link
    assert run_url("https://u:pw@mlflow.lan:8443/", "1", "r") == f"https://mlflow.lan:8443/#/experiments/1/runs/r{view}"


# --- system metrics -------------------------------------------------------------------------------
def test_system_metrics_at_a_fixed_rate_and_never_compared(shared_uri):
    from hrm_core.observe.system import SYSTEM_INTERVAL_S, SystemSampler, gpu_ids, visible_gpus
    from hrm_core.tracking.client import get_client
    from hrm_core.tracking.writer import RunWriter
    from sweeps.reproduce.compare import compare_metrics

    now = [100.0]
    sampler = SystemSampler("0", clock=lambda: now[0])  # GPU 0 asked for: no driver here, no GPU metrics
    first = sampler.poll()
    assert set(first) == {names.SYSTEM_CPU, names.SYSTEM_PROCESS_CPU, names.SYSTEM_PROCESS_RSS}
    assert first[names.SYSTEM_PROCESS_RSS] > 10 and all(names.is_timing(k) for k in first)
    now[0] += SYSTEM_INTERVAL_S - 1
    assert sampler.poll() == {}
    now[0] += 1
    assert set(sampler.poll()) == set(first)
    assert gpu_ids("0;1,2") == ["0", "1", "2"] and gpu_ids("") == [] and gpu_ids([1, 1]) == ["1"]
    assert visible_gpus("cpu") == []

    # two runs alike but for their system metrics reproduce bitwise
    client = get_client(shared_uri)
    exp = client.create_experiment("hrm/system")
    ids = []
    for rss in (100.0, 200.0):
        ids.append(client.create_run(exp).info.run_id)
        writer = RunWriter(client, ids[-1])
        writer.add_metrics(1, {names.TRAIN_LM_LOSS: 0.5, names.SYSTEM_PROCESS_RSS: rss,
                               names.PERF_SAMPLES_PER_S: rss})
        writer.flush()
    comparisons, only_rerun = compare_metrics(client, ids[0], ids[1], upto=1)
    assert [(c.key, c.bitwise) for c in comparisons] == [(names.TRAIN_LM_LOSS, True)] and only_rerun == []


def test_gpu_metrics_through_nvml_when_it_is_there():
    """nvidia-ml-py imports; without a driver (this machine) there is no GPU sample and no error."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    from hrm_core.observe.system import _Nvml

    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        count = 0
    sample = _Nvml(["0"]).sample()
    if count == 0:
        assert sample == {}
    else:
        assert sample[names.SYSTEM_GPU_MEMORY.format(i=0)] > 0
        assert 0 <= sample[names.SYSTEM_GPU_UTILIZATION.format(i=0)] <= 100
