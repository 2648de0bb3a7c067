"""What a search's confirmation stage runs (``sweeps/confirm.py`` runs it): the
configurations it re-runs (the top k completed ones, or the Pareto set), the base
configuration, its fresh seeds, its test metrics, and the stage as an ablation spec.
Pure functions of the sweep spec and the search's MLflow runs: nothing starts here."""

from __future__ import annotations

import math

from hrm_core import names
from hrm_core.config.compose import compose_config
from hrm_core.config.overrides import parse_override
from hrm_core.config.schema import flatten
from sweeps.spec import CONFIG_GROUPS, SweepSpec

BASE_ARM = "base"


def test_metrics(spec: SweepSpec) -> list[str]:
    """The objective's metrics on the test split (``val/x`` -> ``eval/x``)."""
    return [names.on_split(m, names.EVAL) for m in spec.objective.metrics]


def confirm_seeds(spec: SweepSpec) -> list[int]:
    conf = spec.confirm_or_default
    if conf.seeds is not None:
        return list(conf.seeds)
    start = max(spec.seeds) + 1
    return list(range(start, start + spec.min_seeds))


def base_overrides(spec: SweepSpec) -> list[str]:
    """The base arm: every searched (non-group) key at its value without the search."""
    searched = set(spec.space)
    kept = [o for o in spec.base if parse_override(o, where="sweep base").key not in searched]
    flat = flatten(compose_config(kept).model_dump(mode="json"))
    return [f"{k}={_text(flat[k])}" for k in spec.space if k not in CONFIG_GROUPS and k in flat]


def _text(value) -> str:
    """A value as an override writes it (``null``, ``true``)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _params(run, spec: SweepSpec) -> dict:
    """The searched values of a search trial: params for config keys, its arm tag for groups."""
    described = dict(p.split("=", 1) for p in run.data.tags.get(names.TAG_ARM, "").split(",") if "=" in p)
    out = {}
    for key in spec.space:
        value = described.get(key) if key in CONFIG_GROUPS else run.data.params.get(key)
        if value is None:
            return {}
        out[key] = value.lower() if value in ("True", "False") else value
    return out


def _dominates(a: list[float], b: list[float], modes: list[str]) -> bool:
    signed = [(x if m == "max" else -x, y if m == "max" else -y) for x, y, m in zip(a, b, modes, strict=True)]
    return all(x >= y for x, y in signed) and any(x > y for x, y in signed)


def select(spec: SweepSpec, runs) -> list[dict]:
    """The configurations to confirm: completed search trials, best first (one objective),
    or the Pareto set in order of the first objective (two); distinct points, up to top_k."""
    metrics, modes = spec.objective.metrics, spec.objective.modes
    scored = []
    for r in runs:
        if r.data.tags.get(names.TAG_OUTCOME) != names.OUTCOME_COMPLETED:
            continue
        values = [r.data.metrics.get(m) for m in metrics]
        params = _params(r, spec)
        if params and all(v is not None and math.isfinite(v) for v in values):
            scored.append({"params": params, "values": values, "run_id": r.info.run_id,
                           "run_name": r.info.run_name})
    if spec.objective.multi:
        scored = [s for s in scored if not any(_dominates(o["values"], s["values"], modes) for o in scored)]
    sign = 1.0 if modes[0] == "max" else -1.0
    scored.sort(key=lambda s: (-sign * s["values"][0], s["run_name"]))
    out, seen = [], set()
    for s in scored:
        point = tuple(sorted(s["params"].items()))
        if point not in seen:
            seen.add(point)
            out.append(s)
    return out[: spec.confirm_or_default.top_k]


def plan(spec: SweepSpec, search_runs) -> dict:
    """What the stage runs (``confirm.json``): arms, their overrides and search values, seeds."""
    chosen = select(spec, search_runs)
    arms = {BASE_ARM: {"overrides": base_overrides(spec)}}
    for i, s in enumerate(chosen, 1):
        arms[f"top{i}"] = {"overrides": [f"{k}={v}" for k, v in s["params"].items()], "params": s["params"],
                           "search_run_id": s["run_id"], "search_run_name": s["run_name"],
                           "search_values": dict(zip(spec.objective.metrics, s["values"], strict=True))}
    return {"control": BASE_ARM, "arms": arms, "seeds": confirm_seeds(spec), "metrics": test_metrics(spec),
            "modes": spec.objective.modes, "selected_on": spec.objective.metrics,
            "search_seeds": list(spec.seeds), "pareto": spec.objective.multi,
            "top_k": spec.confirm_or_default.top_k, "min_seeds": spec.min_seeds,
            "max_seeds": spec.max_seeds, "failure_value": spec.failure_value,
            "equivalence_margin": spec.equivalence_margin}


def stage_spec(spec: SweepSpec, stage: dict) -> SweepSpec:
    """The stage as an ablation of the same sweep: its arms against ``base``, on test."""
    data = spec.model_dump(exclude={"space", "confirm", "comparisons", "scales"})
    data.update(kind="ablation", arms={a: v["overrides"] for a, v in stage["arms"].items()},
                control=BASE_ARM, seeds=stage["seeds"], scheduler={"type": "none"},
                objective={"metric": stage["metrics"] if spec.objective.multi else stage["metrics"][0],
                           "mode": spec.objective.modes if spec.objective.multi else spec.objective.modes[0]})
    return SweepSpec.model_validate(data)


def stage_runs(runs, confirm: bool):
    """The runs of the confirmation stage (``confirm``), or of the search."""
    return [r for r in runs if (r.data.tags.get(names.TAG_STAGE) == names.STAGE_CONFIRM) == confirm]
