"""What the user types is what runs: the command line wins over the scale preset, the sweep
file and its ``scales.<s>`` block, and one override grammar (Hydra's) serves ``pretrain``,
``sweeps run|validate|resume`` and ``reproduce --set``. The spec and validation layers only:
no Ray, no training."""

from __future__ import annotations

import json

import pytest

from hrm_core.errors import UserError

# Every scale's block sets what the command line sets below, so a layer above it that is
# lost shows. The file is an ablation (seeds) and the search keys are checked on gate_bias.
LAYERED = """\
name: layered
kind: ablation
base: [data=sudoku4, max_steps=30, lr=0.002]
control: a
arms:
  a: [arch=hrm_v1]
  b: [arch=hrm_v1_gated, arch.gate_init_bias=-1.0]
seeds: [0]
num_samples: 2
max_concurrent: 2
resources: {cpu: 1}
scales:
  smoke: {seeds: [0, 1], num_samples: 4, max_concurrent: 2, base: [max_steps=20], resources: {cpu: 1}}
  cpu: {seeds: [0, 1], num_samples: 4, max_concurrent: 2, base: [max_steps=20], resources: {cpu: 1}}
  gpu: {seeds: [0, 1], num_samples: 4, max_concurrent: 2, base: [max_steps=20], resources: {cpu: 1}}
"""
TYPED = ["seeds=[5,6]", "num_samples=3", "max_concurrent=1", "resources.cpu=2", "max_steps=10",
         "arch.hidden_size=32"]


@pytest.fixture
def layered(tmp_path) -> str:
    path = tmp_path / "layered.yaml"
    path.write_text(LAYERED)
    return str(path)


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_the_command_line_wins_at_every_scale(layered, scale):
    from sweeps.spec import load_spec
    from sweeps.validate import compose_trials

    spec, _ = load_spec(layered, scale, TYPED)
    assert (spec.seeds, spec.num_samples, spec.max_concurrent) == ([5, 6], 3, 1)
    # mappings merge key by key: the preset's gpu share stays at the gpu scale
    assert (spec.resources.cpu, spec.resources.gpu) == (2, 1 if scale == "gpu" else 0)
    # base: preset < file < scales.<s> < command line, concatenated in that order
    assert spec.base[-6:] == ["data=sudoku4", "max_steps=30", "lr=0.002", "max_steps=20", "max_steps=10",
                              "arch.hidden_size=32"]
    configs = compose_trials(spec, layered)  # the trials' real configs: the typed keys reach both arms
    assert [(c.max_steps, c.arch.hidden_size, c.lr) for c in configs] == [(10, 32, 0.002)] * 2
    assert configs[1].arch.gate_init_bias == -1.0

    # without the command line, the scale block wins over the file, and the file over the preset
    spec, _ = load_spec(layered, scale)
    assert (spec.seeds, spec.num_samples, spec.max_concurrent) == ([0, 1], 4, 2)
    assert [c.max_steps for c in compose_trials(spec, layered)] == [20, 20]


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_searched_keys_with_dots_and_scheduler_keys_survive(scale):
    from sweeps.spec import load_spec

    typed = ["num_samples=3", "max_concurrent=1", "space.arch.gate_init_bias.low=-2",
             "space.arch.hidden_size={type:int,low:32,high:64}", "scheduler.grace_period=5"]
    spec, _ = load_spec("gate_bias", scale, typed)
    assert (spec.num_samples, spec.max_concurrent, spec.scheduler.grace_period) == (3, 1, 5)
    bias, width = spec.space["arch.gate_init_bias"], spec.space["arch.hidden_size"]
    assert (bias.type, bias.low, bias.high) == ("uniform", -2.0, 0.0)  # one field set, the rest kept
    assert (width.type, width.low, width.high) == ("int", 32, 64)
    assert spec.scheduler.reduction_factor == 2  # the file's, under the typed grace period


def test_the_issues_examples():
    from sweeps.spec import load_spec

    assert load_spec("feudal_weight", "cpu", ["seeds=[5,6]"])[0].seeds == [5, 6]
    assert load_spec("gate_bias", "smoke", ["num_samples=3"])[0].num_samples == 3
    with pytest.raises(UserError, match=r"seeds=0,1.*multirun.*seeds=\[0,1\]"):
        load_spec("feudal_weight", "smoke", ["seeds=0,1"])


@pytest.mark.parametrize("typed, needle", [
    ("seeds=0,1", "write seeds=[0,1]"),  # a Hydra multirun list, not a list
    ("seeds=[0,1", "cannot parse"),
    ("seeds=[a]", "override 'seeds=[a]': seeds.0: Input should be a valid integer"),
    ("num_samples=0", "override 'num_samples=0': num_samples: Input should be greater than 0"),
    ("max_concurrent=many", "override 'max_concurrent=many': max_concurrent"),
    ("seedz=[1]", "did you mean 'seeds'"),
    ("max_stepz=3", "did you mean 'max_steps'"),
    ("seed=3", "write seeds=[3]"),
    ("scale=gpu", "--scale"),
    ("scales.smoke.seeds=[1]", "set the key itself"),
    ("arch=hrm_v1_gated", "arm 'a' sets arch itself"),  # an arm's own override would win
    ("~arms.z", "no 'arms.z' to delete"),
    ("base=max_steps", "base takes a list"),
    ("resources.cpu=-1", "override 'resources.cpu=-1': resources.cpu: Input should be greater than 0"),
])
def test_a_malformed_override_is_one_line_even_when_the_scale_block_sets_the_key(layered, typed, needle):
    from sweeps.spec import load_spec

    with pytest.raises(UserError) as err:
        load_spec(layered, "smoke", [typed])
    message = str(err.value)
    assert "\n" not in message and message.startswith(layered), message
    assert needle in message, message


def test_a_new_searched_key_is_named_whole_in_its_error():
    """``space.arch.hidden_size.low`` without a type: the fault names the searched key
    ``arch.hidden_size``, not a key ``arch`` of ``space``."""
    from sweeps.spec import load_spec

    with pytest.raises(UserError, match=r"space\.arch\.hidden_size\.type: Field required"):
        load_spec("gate_bias", "smoke", ["space.arch.hidden_size.low=32"])
    with pytest.raises(UserError, match="the search space sets arch.gate_init_bias"):
        load_spec("gate_bias", "smoke", ["arch.gate_init_bias=-1"])


def test_arms_are_added_replaced_and_dropped_by_name(layered):
    from sweeps.spec import load_spec

    typed = ['arms.c=["lr=0.003"]', "~arms.b", 'arms={weight_0.03: ["lr=0.1"]}']  # dots: a mapping's key
    spec, _ = load_spec(layered, "smoke", typed)
    assert spec.arms == {"a": ["arch=hrm_v1"], "c": ["lr=0.003"], "weight_0.03": ["lr=0.1"]}


def test_validate_takes_the_overrides_of_run_and_resume_and_extend_take_none(layered, capsys, monkeypatch,
                                                                             tmp_path):
    from sweeps.__main__ import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["validate", layered, "seeds=[5,6]", "--scale", "smoke", "max_concurrent=1"]) == 0
    assert "2 arms x 2 seeds, max_concurrent 1, scale smoke" in capsys.readouterr().out
    assert main(["validate", layered, "--scale", "cpu", "seeds=0,1"]) == 2
    assert "write seeds=[0,1]" in capsys.readouterr().err
    for argv in (["resume", layered, "seeds=[1]"], ["run", layered, "--extend", "seeds=[1]"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "takes no overrides (got seeds=[1])" in err and "\n" not in err, err
    assert not (tmp_path / "mlflow.db").exists()


def test_the_invocations_overrides_are_recorded_and_re_applied():
    from hrm_core import names
    from sweeps.overrides import record, recorded

    typed = ["seeds=[5,6]", "max_steps=800", "~arms.gated"]
    tags = {names.TAG_SWEEP_OVERRIDES: record(typed)}
    assert json.loads(tags[names.TAG_SWEEP_OVERRIDES]) == typed
    assert recorded(tags) == typed
    assert recorded(tags, drop=("seeds",)) == ["max_steps=800", "~arms.gated"]  # --extend: the file's seeds
    assert recorded({}) == []  # an invocation from before the tag


def test_ablate_gating_runs_the_seeds_asked_for(capsys):
    """The script's arguments as make passes them (SWEEP_ARGS after its flags): --seeds 5 is
    5 seeds although the smoke block says 2, and trailing overrides are sweep overrides."""
    from sweeps.ablate_gating import main

    assert main(["--seeds", "5", "--scale", "smoke", "--validate-only"]) == 0
    assert "4 arms x 5 seeds [0, 1, 2, 3, 4], scale smoke" in capsys.readouterr().out
    assert main(["--seeds", "5", "--scale", "smoke", "--validate-only", "max_concurrent=1", "--arms", "gated",
                 "max_steps=48"]) == 0
    assert "2 arms x 5 seeds [0, 1, 2, 3, 4], scale smoke, max_concurrent 1" in capsys.readouterr().out
    assert main(["--seeds", "5", "seeds=[1]", "--validate-only"]) == 2
    assert "--seeds and seeds=... both given" in capsys.readouterr().err


# --- one grammar: pretrain, reproduce --set and sweeps read the same text the same way -----------
SAME = {
    "lr=1e-3": ("lr", 0.001),  # YAML 1.1 would read the string '1e-3'
    "eval_interval=null": ("eval_interval", None),
    "arch.hidden_size=32": ("arch.hidden_size", 32),
    "run_name='gated run'": ("run_name", "gated run"),
    "curriculum.stages=[{name: a, steps: 8, halt_max_steps: 2}]": ("curriculum.stages.0.steps", 8),
}


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[int(part)] if part.isdigit() else getattr(cfg, part)
    return cfg


def test_one_grammar_in_pretrain_reproduce_and_sweeps(layered):
    from hrm_core.config.compose import compose_config
    from hrm_core.config.schema import validate_config
    from sweeps.reproduce.plan import apply_sets
    from sweeps.spec import load_spec
    from sweeps.validate import compose_trials

    typed, base = list(SAME), ["data=sudoku4", "arch=hrm_tiny"]
    pretrain = compose_config([*base, *typed])
    reproduce = validate_config(apply_sets(compose_config(base).model_dump(), typed)[0])
    spec, _ = load_spec(layered, "smoke", [*typed, "~arms.b"])
    (sweep,) = compose_trials(spec, layered)
    for text, (key, want) in SAME.items():
        assert _get(pretrain, key) == _get(reproduce, key) == _get(sweep, key) == want, text


@pytest.mark.parametrize("text, needle", [
    ("lr=1e-3,1e-4", "multirun"),
    ("lr=[1e-3", "cannot parse"),
    ("lr", "cannot parse"),
    ("lr@pkg=1", "@package"),
])
def test_one_grammar_refuses_the_same_text_alike(text, needle, layered, capsys):
    from hrm_core.pretrain import main as pretrain_main
    from sweeps.reproduce.plan import apply_sets
    from sweeps.spec import load_spec

    assert pretrain_main(["data=sudoku4", text]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and needle in errors[0], errors
    for attempt in (lambda: apply_sets({}, [text]), lambda: load_spec(layered, "smoke", [text])):
        with pytest.raises(UserError, match=needle):
            attempt()
