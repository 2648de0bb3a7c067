"""Sweep files are validated before anything starts: one line per fault, no Ray, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT

GOOD = """\
name: t
kind: ablation
base: [data=sudoku4]
control: a
arms:
  a: [arch=hrm_v1]
  b: [arch=hrm_v1_gated]
seeds: [0, 1]
scale: smoke
"""

SEARCH = """\
name: s
kind: search
base: [data=sudoku4]
space:
  lr: {type: loguniform, low: 1e-4, high: 1e-2}
scale: smoke
"""

CASES = {
    "empty": (b"", "empty sweep file"),
    "comments": (b"# nothing here\n\n# at all\n", "empty sweep file"),
    "not_utf8": (b"name: caf\xe9\n", "not UTF-8"),
    "binary": (b"\x00\x01\x02name", "binary file"),
    "top_list": (b"- a\n- b\n", "must be a mapping"),
    "duplicate_key": (
        GOOD.replace("seeds: [0, 1]", "seeds: [0, 1]\nseeds: [2]").encode(), "duplicate key 'seeds'",
    ),
    "alias_bomb": (b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n", "aliases"),
    "unknown_key": (GOOD.replace("seeds:", "seedz:").encode(), "did you mean 'seeds'"),
    "wrong_type": (GOOD.replace("seeds: [0, 1]", "seeds: many").encode(), "seeds"),
    "inverted_range": (
        SEARCH.replace("low: 1e-4, high: 1e-2", "low: 1e-2, high: 1e-4").encode(), "inverted range",
    ),
    "empty_choice": (
        SEARCH.replace("{type: loguniform, low: 1e-4, high: 1e-2}", "{type: choice, values: []}").encode(),
        "non-empty",
    ),
    "unknown_metric": (
        GOOD.replace("seeds:", "objective: {metric: eval/exact_acuracy}\nseeds:").encode(),
        "did you mean 'eval/exact_accuracy'",
    ),
    "scheduler_vs_mode": (
        GOOD.replace("seeds:", "scheduler: {type: asha}\nseeds:").encode(), "an ablation runs every arm",
    ),
    "multi_objective_asha": (
        SEARCH.replace("scale:", "objective: {metric: [eval/exact_accuracy, eval/steps], mode: [max, min]}\n"
                       "scheduler: {type: asha}\nscale:").encode(),
        "rung_metric",
    ),
    "control_not_an_arm": (GOOD.replace("control: a", "control: z").encode(), "control"),
    "bad_arm_override": (
        GOOD.replace("[arch=hrm_v1_gated]", "[arch.hiden_size=8]").encode(),
        "did you mean 'arch.hidden_size'",
    ),
    "bad_space_key": (SEARCH.replace("  lr:", "  lrr:").encode(), "did you mean 'lr'"),
    "resources": (GOOD.replace("seeds:", "resources: {cpu: 512}\nseeds:").encode(), "needs 512 CPUs"),
    "gpu_resources": (GOOD.replace("seeds:", "resources: {cpu: 1, gpu: 3}\nseeds:").encode(), "GPUs"),
    # fault injection is the tests' (trainables/faults.py), not a key of the sweep file
    "test_hooks": (GOOD.replace("seeds:", "test_hooks: {pid_dir: /tmp}\nseeds:").encode(), "test_hooks"),
}


def _ray_running() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


@pytest.mark.parametrize("case", list(CASES))
def test_each_fault_is_one_line_and_starts_nothing(case, tmp_path, monkeypatch, capsys):
    """In-process (the CLI's own main), so each case costs no interpreter start-up; the
    fresh-process exit code is checked once below."""
    from sweeps.__main__ import main

    content, needle = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    db = tmp_path / "mlflow.db"
    storage = tmp_path / "ray"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_before = _ray_running()
    assert main(["run", str(path), f"storage_path={storage}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:"), errors
    assert needle in errors[0], errors[0]
    assert str(path) in errors[0] or case == "bad_arm_override", errors[0]
    assert not db.exists(), "no MLflow run may exist"
    assert not storage.exists(), "nothing written"
    assert ray_before or not _ray_running(), "no Ray may be started"


@pytest.mark.parametrize("override, needle", [
    ("seeds=0,1", "write seeds=[0,1]"),  # a Hydra multirun list, refused although the file sets seeds
    ("seeds=[0,", "cannot parse"),
    ("max_stepz=8", "did you mean 'max_steps'"),
])
def test_a_bad_override_is_one_line_and_starts_nothing(override, needle, tmp_path, monkeypatch, capsys):
    from sweeps.__main__ import main

    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    db, storage = tmp_path / "mlflow.db", tmp_path / "ray"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_before = _ray_running()
    assert main(["run", str(path), "--scale", "smoke", override, f"storage_path={storage}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}: ") and needle in errors[0], errors
    assert not db.exists() and not storage.exists()
    assert ray_before or not _ray_running(), "no Ray may be started"


def test_fault_exits_2_from_a_fresh_process(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_bytes(CASES["duplicate_key"][0])
    db = tmp_path / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    proc = subprocess.run([sys.executable, "-m", "sweeps", "run", str(path),
                           f"storage_path={tmp_path / 'ray'}"],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [errors[0]], proc.stderr
    assert "duplicate key 'seeds'" in errors[0] and str(path) in errors[0], proc.stderr
    assert not db.exists() and not (tmp_path / "ray").exists()


def test_validation_does_not_import_ray(tmp_path):
    code = (
        "import sys; from sweeps.spec import load_spec; from sweeps.validate import validate; "
        "s, p = load_spec('ablate_gating', 'smoke'); validate(s, p); print('ray' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


SHIPPED = sorted(f[:-5] for f in os.listdir(os.path.join(PROJECT, "configs", "sweep")) if f.endswith(".yaml"))


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("scale", ["smoke", "cpu"])
def test_shipped_sweeps_validate(name, scale):
    from sweeps.spec import load_spec
    from sweeps.validate import validate

    spec, path = load_spec(name, scale)
    assert validate(spec, path, check_cluster=False)


def test_prepare_fingerprints_every_dataset_the_arms_train_on(tmp_path, sudoku4_dataset):
    """Arms on different datasets: each dataset gets its own fingerprint (trials are tagged
    with the one they train on, not the first arm's)."""
    from hrm_core.config.compose import compose_config
    from hrm_core.data.format import dataset_fingerprint
    from hrm_core.data.resolve import recipe_data_dir
    from sweeps.prepare import prepare

    path = tmp_path / "two_data.yaml"
    path.write_text(f"""\
name: two_data
kind: ablation
base: [data=sudoku4]
control: builtin
arms:
  builtin: []
  other: [data_path={sudoku4_dataset}]
seeds: [0]
scale: smoke
""")
    prep = prepare(str(path), log=lambda *_: None)
    builtin = recipe_data_dir(compose_config(["data=sudoku4"]).data)  # data/sudoku4-val<N>: a val split
    assert prep.fingerprints == {
        builtin: dataset_fingerprint(builtin), sudoku4_dataset: dataset_fingerprint(sudoku4_dataset),
    }
