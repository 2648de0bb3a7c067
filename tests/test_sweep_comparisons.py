"""The verdict keys of a sweep file (``comparisons``, ``failure_value``, ``min_seeds``,
``max_seeds``, ``equivalence_margin``, ``confirm``): validated in one line naming the key,
recorded in sweep_resolved.json, and an older invocation without them still extends."""

from __future__ import annotations

import json

import pytest

from hrm_core import names
from hrm_core.errors import UserError
from tests.conftest import write_sweep

ABLATION = """\
name: cmp
kind: ablation
base: [data=sudoku4]
control: a
arms:
  a: []
  b: [lr=0.002]
  c: [lr=0.003]
seeds: [0]
scale: smoke
"""


def load(tmp_path, text: str, *overrides: str):
    from sweeps.spec import load_spec

    return load_spec(write_sweep(tmp_path, text), None, list(overrides))[0]


@pytest.mark.parametrize("extra, needle", [
    ("comparisons: [{arm: b, reference: z}]", "comparisons.0.reference: no arm 'z'"),
    ("comparisons: [{arm: b, reference: b}]", "comparisons.0: arm 'b' is compared with itself"),
    ("comparisons: [{arm: b, reference: a}, {arm: b, reference: a}]", "declared twice"),
    ("comparisons: [{arm: b, against: a}]", "comparisons.0.reference: Field required"),
    ("objective: {metric: train/lm_loss, mode: min}", "failure_value: required for a 'min' objective"),
    ("max_seeds: 2", "max_seeds (2) must be >= min_seeds (3)"),
    ("min_seeds: 1", "min_seeds"),
    ("equivalence_margin: 0", "equivalence_margin"),
    ("confirm: {top_k: 2}", "confirm: only a search has a confirmation stage"),
])
def test_bad_verdict_keys_are_one_line_naming_the_key(tmp_path, extra, needle):
    with pytest.raises(UserError) as err:
        load(tmp_path, ABLATION + extra + "\n")
    text = str(err.value)
    assert needle in text and "\n" not in text and "sweep.yaml" in text, text


def test_search_keys(tmp_path):
    search = ("name: s\nkind: search\nbase: [data=sudoku4]\nseeds: [0, 1]\nscale: smoke\n"
              "space:\n  lr: {type: uniform, low: 0.0001, high: 0.01}\n")
    for extra, needle in (("confirm: {seeds: [1, 5, 6]}", "confirm.seeds: [1] the search uses already"),
                          ("confirm: {seeds: [5, 6]}", "fewer than min_seeds (3)"),
                          ("confirm: {top_k: 0}", "confirm.top_k"),
                          ("comparisons: [{arm: a, reference: b}]", "only an ablation declares comparisons")):
        with pytest.raises(UserError) as err:
            load(tmp_path, search + extra + "\n")
        assert needle in str(err.value), err.value
    spec = load(tmp_path, search)
    assert spec.confirm is None and spec.confirm_or_default.top_k == 3
    # a scale may set the stage too (the smoke scale of the search files confirms the best only)
    assert load(tmp_path, search + "scales:\n  smoke: {confirm: {top_k: 1}}\n").confirm.top_k == 1


def test_resolved_spells_out_the_family(tmp_path):
    spec = load(tmp_path, ABLATION)
    resolved = spec.resolved()
    assert resolved["comparisons"] == [{"arm": "b", "reference": "a", "label": None},
                                       {"arm": "c", "reference": "a", "label": None}]
    assert (resolved["min_seeds"], resolved["max_seeds"]) == (3, 10)
    assert resolved["failure_value"] is None and resolved["equivalence_margin"] is None
    declared = load(tmp_path, ABLATION + "comparisons: [{arm: c, reference: b, label: more lr}]\n"
                    "failure_value: 0.0\nequivalence_margin: 0.02\n").resolved()
    assert declared["comparisons"] == [{"arm": "c", "reference": "b", "label": "more lr"}]
    assert (declared["failure_value"], declared["equivalence_margin"]) == (0.0, 0.02)
    assert set(json.loads(json.dumps(declared))) >= {"comparisons", "failure_value", "min_seeds", "max_seeds",
                                                     "equivalence_margin"}


def test_the_shipped_files_declare_the_questions():
    from sweeps.spec import load_spec

    feudal = load_spec("feudal_weight", "cpu")[0].declared_comparisons
    assert [(c["arm"], c["reference"]) for c in feudal] == [
        ("weight_0.03", "weight_0"), ("weight_0.1", "weight_0"), ("weight_0.3", "weight_0"),
        ("weight_0", "head_off")]
    assert {c["label"] for c in feudal} == {"does the loss help", "does the head alone change anything"}
    gating = load_spec("ablate_gating", "cpu")[0].declared_comparisons
    assert [(c["arm"], c["reference"]) for c in gating] == [
        ("gated", "ungated"), ("gated_bias_-1", "gated"), ("gated_bias_-3", "gated")]
    for name in ("feudal_weight", "ablate_gating"):
        spec = load_spec(name, "cpu")[0]
        assert len(spec.seeds) >= spec.min_seeds, f"{name}: the cpu scale runs fewer seeds than min_seeds"


def test_an_arm_dropped_on_the_command_line_takes_its_comparisons_along():
    from sweeps.spec import load_spec

    spec = load_spec("ablate_gating", "smoke", ["~arms.gated_bias_-1"])[0]
    assert [(c["arm"], c["reference"]) for c in spec.declared_comparisons] == [
        ("gated", "ungated"), ("gated_bias_-3", "gated")]
    spec = load_spec("ablate_gating", "smoke", ["~arms.gated"])[0]  # none left: every arm vs control
    assert [(c["arm"], c["reference"]) for c in spec.declared_comparisons] == [
        ("gated_bias_-1", "ungated"), ("gated_bias_-3", "ungated")]


# --- extending an invocation recorded before these keys existed --------------------------------
def _old_invocation(client, spec, drop: tuple[str, ...]) -> str:
    """A finished invocation with every (arm, seed) done, whose sweep_resolved.json predates ``drop``."""
    from hrm_core.tracking.client import ensure_experiment
    from sweeps.overrides import record

    exp = ensure_experiment(client, names.experiment_name(spec.name))
    parent = client.create_run(exp, run_name=names.parent_run_name(spec.name), tags={
        names.TAG_RUN_KIND: names.RUN_KIND_SWEEP, names.TAG_SWEEP: spec.name,
        names.TAG_SWEEP_KIND: "ablation", names.TAG_SWEEP_STATUS: "finished", names.TAG_SCALE: "smoke",
        names.TAG_SWEEP_OVERRIDES: record([])})
    old = {k: v for k, v in spec.model_dump().items() if k not in drop}
    client.log_text(parent.info.run_id, json.dumps(old, default=str), "sweep_resolved.json")
    for arm in spec.arms:
        run = client.create_run(exp, tags={names.TAG_INVOCATION: parent.info.run_id, names.TAG_ARM: arm,
                                           names.TAG_SEED: "0", names.TAG_OUTCOME: names.OUTCOME_COMPLETED})
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    return parent.info.run_id


def test_an_old_invocation_without_the_new_keys_still_extends(store, tmp_path):
    from sweeps.extend import extend_sweep
    from sweeps.spec import VERDICT_DEFAULTS

    path = write_sweep(tmp_path, ABLATION)
    spec = load(tmp_path, ABLATION)
    parent_id = _old_invocation(store, spec, drop=(*VERDICT_DEFAULTS, "comparisons"))
    lines: list[str] = []
    assert extend_sweep(path, log=lines.append) == parent_id  # not refused: the keys compare as defaults
    assert any("already has every (arm, seed)" in line for line in lines), lines
    # a key the old invocation lacks still guards against a real change: min_seeds 3 (default) -> 4
    write_sweep(tmp_path, ABLATION + "min_seeds: 4\n")
    with pytest.raises(UserError, match=r"'min_seeds' changed since the invocation ran \(3 -> 4\)"):
        extend_sweep(path, log=lines.append)
    # the default family (b vs a, c vs a): declaring another one is refused, naming the key
    write_sweep(tmp_path, ABLATION + "comparisons: [{arm: c, reference: b}]\n")
    with pytest.raises(UserError, match=r"'comparisons' changed.*dropped b vs a"):
        extend_sweep(path, log=lines.append)


def test_a_new_arm_brings_its_default_comparison(tmp_path):
    from sweeps.extend import check_comparable

    old = load(tmp_path, ABLATION).resolved()
    grown = load(tmp_path, ABLATION.replace("  c: [lr=0.003]\n", "  c: [lr=0.003]\n  d: [lr=0.004]\n"))
    check_comparable(old, grown, "sweep.yaml")  # d vs a is new, and d is a new arm: allowed
    mixed = load(tmp_path, ABLATION + "comparisons: [{arm: b, reference: a}, {arm: c, reference: a}, "
                 "{arm: c, reference: b}]\n")
    with pytest.raises(UserError, match=r"'comparisons' changed.*added c vs b"):
        check_comparable(old, mixed, "sweep.yaml")
