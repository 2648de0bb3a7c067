"""MLflow runs of a sweep -> tidy pandas frames.

Reports read only from MLflow (so any past sweep can be re-reported), through the names
of ``hrm_core.names`` and MLflow's public client API (``search_runs``,
``get_metric_history``). A sweep is found by its name (the latest invocation: parent run),
by a parent run id, or by experiment (every invocation). The store is the one
``hrm_core.tracking.uris`` names (``MLFLOW_TRACKING_URI``, else the embedded store).

Histories have one fast path, on a SQLite store only: see ``load_history``.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hrm_core import names
from hrm_core.tracking.uris import sqlite_path
from hrm_core.tracking.uris import tracking_uri as default_tracking_uri

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where reports/ goes
HISTORY_COLUMNS = ["run_id", "key", "step", "value", "timestamp"]
_CHUNK = 500  # run ids per SQL query (SQLite allows 32766 bound variables)
_PAGE = 1000
_THREADS = 8  # concurrent get_metric_history calls


class AnalysisError(Exception):
    """A bad request (unknown sweep, empty parent run, unlogged metric): one line, no traceback."""


def open_client(tracking_uri: str | None = None):
    """An MlflowClient; refuses a SQLite file that does not exist rather than creating an
    empty store just to report that it is empty."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    path = sqlite_path(uri)
    if path is not None and not os.path.exists(path):
        raise AnalysisError(f"no MLflow store at {uri} (set MLFLOW_TRACKING_URI or pass --tracking-uri)")
    return MlflowClient(tracking_uri=uri)


@dataclass
class SweepInfo:
    """What the parent run says about a sweep invocation (empty fields when unknown)."""

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    sweep: str
    parent_run_id: str | None = None
    parent_run_name: str = ""
    kind: str = ""  # "search" | "ablation"
    control: str = ""
    objective: str = names.DEFAULT_OBJECTIVE
    mode: str = "max"
    status: str = ""
    optuna_storage: str = ""
    optuna_study: str = ""
    start_time: float = math.nan
    parent_tags: dict[str, str] = field(default_factory=dict)
    parent_metrics: dict[str, float] = field(default_factory=dict)  # e.g. the compute/sweep_* totals
    # the verdict plan, from the invocation's sweep_resolved.json (these defaults when a key is missing)
    comparisons: list[dict] = field(default_factory=list)  # {arm, reference, label}; [] = each arm vs control
    failure_value: float | None = None
    min_seeds: int = 3
    max_seeds: int = 10
    equivalence_margin: float | None = None
    plan_defaults: list[str] = field(default_factory=list)  # the keys the invocation did not record

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------
# resolving a sweep
# --------------------------------------------------------------------------------------
def _search_all(
    client, experiment_ids: list[str], filter_string: str = "", order_by: list[str] | None = None
) -> list:
    """Every matching run, across pages."""
    out, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, max_results=_PAGE, order_by=order_by, page_token=token
        )
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def _known_sweeps(client) -> list[str]:
    prefix = f"name LIKE '{names.EXPERIMENT_PREFIX}%'"
    exps = client.search_experiments(filter_string=prefix, max_results=1000)
    return sorted(e.name.removeprefix(names.EXPERIMENT_PREFIX) for e in exps)


def _info_from_parent(client, uri: str, parent) -> SweepInfo:
    tags = dict(parent.data.tags)
    exp = client.get_experiment(parent.info.experiment_id)
    sweep = tags.get(names.TAG_SWEEP) or exp.name.removeprefix(names.EXPERIMENT_PREFIX)
    info = SweepInfo(
        tracking_uri=uri,
        experiment_id=parent.info.experiment_id,
        experiment_name=exp.name,
        sweep=sweep,
        parent_run_id=parent.info.run_id,
        parent_run_name=parent.info.run_name or "",
        kind=tags.get(names.TAG_SWEEP_KIND, ""),
        control=tags.get(names.TAG_CONTROL, ""),
        objective=tags.get(names.TAG_OBJECTIVE) or names.DEFAULT_OBJECTIVE,
        mode=tags.get(names.TAG_OBJECTIVE_MODE) or "max",
        status=tags.get(names.TAG_SWEEP_STATUS, parent.info.status.lower()),
        optuna_storage=tags.get(names.TAG_OPTUNA_STORAGE, ""),
        optuna_study=tags.get(names.TAG_OPTUNA_STUDY, ""),
        start_time=(parent.info.start_time or 0) / 1000.0,
        parent_tags=tags,
        parent_metrics=dict(parent.data.metrics),
    )
    _read_plan(client, info)
    return info


PLAN_KEYS = ("comparisons", "failure_value", "min_seeds", "max_seeds", "equivalence_margin")


def _read_plan(client, info: SweepInfo) -> None:
    """The verdict keys of the invocation's resolved sweep file; a key it lacks (an older
    invocation) keeps its default and is named in ``plan_defaults``."""
    import json

    from hrm_core.tracking.client import read_text_artifact

    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no progress bar in a report's output
    try:
        resolved = json.loads(read_text_artifact(client, info.parent_run_id, "sweep_resolved.json"))
    except Exception:  # noqa: BLE001 - no artifact (runs from other tools, old invocations): defaults
        resolved = {}
    finally:
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar
    resolved = resolved if isinstance(resolved, dict) else {}
    for key in PLAN_KEYS:
        value = resolved.get(key)
        if key not in resolved:
            info.plan_defaults.append(key)
        if value is None:
            continue
        if key == "comparisons":
            info.comparisons = [{"arm": str(c["arm"]), "reference": str(c["reference"]),
                                 "label": c.get("label") or ""} for c in value]
        else:
            setattr(info, key, int(value) if key.endswith("seeds") else float(value))


def _child_runs(client, experiment_id: str, parent_id: str) -> list:
    runs = _search_all(client, [experiment_id], f"tags.`{names.TAG_INVOCATION}` = '{parent_id}'")
    if not runs:  # runs nested by other tools carry only MLflow's own parent tag
        runs = _search_all(client, [experiment_id], f"tags.`{names.TAG_MLFLOW_PARENT}` = '{parent_id}'")
    return runs


def _get_experiment(client, sweep: str | None, experiment: str | None):
    name = experiment if experiment is not None else names.experiment_name(sweep or "")
    exp = client.get_experiment_by_name(name)
    if exp is None and experiment is not None and experiment.isdigit():
        from mlflow.exceptions import MlflowException

        try:
            exp = client.get_experiment(experiment)
        except MlflowException:
            exp = None
    if exp is None:
        known = ", ".join(_known_sweeps(client)) or "none"
        what = f"sweep '{sweep}'" if experiment is None else f"experiment '{experiment}'"
        raise AnalysisError(
            f"unknown {what}: no MLflow experiment '{name}' at {client.tracking_uri} (known sweeps: {known})"
        )
    return exp


def _load(
    client, uri: str, sweep: str | None, parent_run: str | None, experiment: str | None
) -> tuple[SweepInfo, list]:
    from mlflow.exceptions import MlflowException

    if parent_run:
        try:
            parent = client.get_run(parent_run)
        except MlflowException:
            raise AnalysisError(f"unknown parent run '{parent_run}' at {uri}") from None
        info = _info_from_parent(client, uri, parent)
        children = _child_runs(client, info.experiment_id, parent_run)
        if not children:
            name = info.parent_run_name or "unnamed"
            raise AnalysisError(f"parent run {parent_run} ({name}) has no child runs")
        return info, children
    exp = _get_experiment(client, sweep, experiment)
    kind = f"tags.`{names.TAG_RUN_KIND}`"
    parents = _search_all(client, [exp.experiment_id], f"{kind} = '{names.RUN_KIND_SWEEP}'",
                          order_by=["attributes.start_time DESC"])
    if experiment is not None:  # every invocation of the family
        trials = _search_all(client, [exp.experiment_id], f"{kind} = '{names.RUN_KIND_TRIAL}'")
        if not trials:
            raise AnalysisError(f"experiment '{exp.name}' has no trial runs")
        if parents:  # the latest invocation's metadata, not its identity
            info = _info_from_parent(client, uri, parents[0])
            info.parent_run_id, info.parent_run_name, info.parent_metrics = None, "", {}
        else:
            info = SweepInfo(uri, exp.experiment_id, exp.name, exp.name)
        return info, trials
    if not parents:
        raise AnalysisError(f"sweep '{sweep}' has no parent run in experiment '{exp.name}'")
    for parent in parents:  # the latest invocation that has trials
        children = _child_runs(client, exp.experiment_id, parent.info.run_id)
        if children:
            return _info_from_parent(client, uri, parent), children
    latest = f"{len(parents)} invocation(s), latest {parents[0].info.run_id}"
    raise AnalysisError(f"sweep '{sweep}' has no trial runs yet ({latest})")


# --------------------------------------------------------------------------------------
# runs -> frame
# --------------------------------------------------------------------------------------
def _outcome(tags: dict[str, str], status: str) -> str:
    """The trial's outcome tag; runs without one are still running (or ended abnormally)."""
    outcome = tags.get(names.TAG_OUTCOME)
    if outcome:
        return outcome
    by_status = {"FAILED": names.OUTCOME_ERROR, "KILLED": names.OUTCOME_KILLED,
                 "FINISHED": names.OUTCOME_COMPLETED}
    return by_status.get(status, "running")


def _coerce(col: pd.Series) -> pd.Series:
    """Numeric when every non-empty value parses as a number (params are strings in MLflow)."""
    non_null = col.dropna()
    if non_null.empty or non_null.isin(["True", "False", "true", "false"]).any():
        return col
    converted = pd.to_numeric(non_null, errors="coerce")
    return pd.to_numeric(col, errors="coerce") if converted.notna().all() else col


def _split_size(run, split: str) -> float:
    """Examples in a split of the run's dataset, from its dataset input (the profile logged
    by ``hrm_core.tracking.datasets``); NaN when the run logged none."""
    import json

    for inp in getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []:
        try:
            size = json.loads(inp.dataset.profile or "{}").get(f"{split}_examples")
        except (ValueError, AttributeError):
            continue
        if size:
            return float(size)
    return math.nan


def runs_frame(runs: Sequence) -> pd.DataFrame:
    """Tidy frame, one row per run: core columns then ``params.*``, ``tags.*``, ``metrics.*``
    (the final = latest-step value of each metric)."""
    rows = []
    for r in runs:
        tags = r.data.tags
        seed = tags.get(names.TAG_SEED, r.data.params.get("seed"))
        start, end = r.info.start_time, r.info.end_time
        row: dict[str, Any] = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name or "",
            "experiment_id": r.info.experiment_id,
            "parent_run_id": tags.get(names.TAG_INVOCATION) or tags.get(names.TAG_MLFLOW_PARENT),
            "sweep": tags.get(names.TAG_SWEEP, ""),
            "trial_id": tags.get(names.TAG_TRIAL_ID, ""),
            "arm": tags.get(names.TAG_ARM) or "default",
            "seed": seed,
            "outcome": _outcome(tags, r.info.status),
            "status": r.info.status,
            "start_time": pd.to_datetime(start, unit="ms", utc=True) if start else pd.NaT,
            "end_time": pd.to_datetime(end, unit="ms", utc=True) if end else pd.NaT,
            "duration_s": (end - start) / 1000.0 if start and end else math.nan,
            "test_size": _split_size(r, "test"),
            "val_size": _split_size(r, "val"),
        }
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"tags.{k}": v for k, v in tags.items()})
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    for c in [c for c in frame.columns if c.startswith("params.")]:
        frame[c] = _coerce(frame[c])
    core = [c for c in frame.columns if "." not in c]
    rest = sorted(c for c in frame.columns if "." in c)
    frame = frame[core + rest].sort_values(["arm", "seed", "run_name"], na_position="last")
    return frame.reset_index(drop=True)


def load_sweep(
    sweep: str | None = None,
    *,
    parent_run: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> tuple[SweepInfo, pd.DataFrame]:
    """The sweep's metadata (from its parent run) and its trial runs as a tidy frame.

    ``sweep``: the latest invocation with trials; ``parent_run``: that invocation;
    ``experiment`` (name or id): the trials of every invocation.
    """
    if sum(x is not None for x in (sweep, parent_run, experiment)) != 1:
        raise AnalysisError("give exactly one of: a sweep name, a parent run id, an experiment")
    uri = tracking_uri or default_tracking_uri()
    client = open_client(uri)
    info, runs = _load(client, uri, sweep, parent_run, experiment)
    frame = runs_frame(runs)
    frame.attrs["sweep"] = info.as_dict()
    return info, frame


def load_runs(
    sweep: str | None = None,
    *,
    parent_run: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """The trial runs of a sweep as a tidy frame (``frame.attrs['sweep']`` holds the
    parent run's metadata). See ``load_sweep``."""
    return load_sweep(sweep, parent_run=parent_run, experiment=experiment, tracking_uri=tracking_uri)[1]


def logged_metrics(runs: pd.DataFrame) -> list[str]:
    """Metric keys that at least one run has logged."""
    logged = (c for c in runs.columns if c.startswith("metrics.") and runs[c].notna().any())
    return sorted(c.removeprefix("metrics.") for c in logged)


def require_metric(runs: pd.DataFrame, metric: str) -> None:
    """Raise a one-line error for a metric no run ever logged."""
    logged = logged_metrics(runs)
    if metric not in logged:
        shown = ", ".join(logged[:12]) + (" ..." if len(logged) > 12 else "")
        shown = shown or "nothing"
        raise AnalysisError(f"metric '{metric}' was never logged by these {len(runs)} runs (logged: {shown})")


# --------------------------------------------------------------------------------------
# histories
# --------------------------------------------------------------------------------------
def _api_history(client, run_ids: list[str], metrics: list[str]) -> pd.DataFrame:
    """MLflow's public API: ``get_metric_history`` per (run, metric), on 8 threads."""

    def one(job: tuple[str, str]) -> list[tuple]:
        run_id, key = job
        return [(run_id, key, m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]

    rows: list[tuple] = []
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        for part in pool.map(one, [(r, k) for r in run_ids for k in metrics]):
            rows.extend(part)
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def _sqlite_history(path: str, run_ids: list[str], metrics: list[str]) -> pd.DataFrame | None:
    """The fast path: MLflow's ``metrics`` table of a SQLite store, read-only, one query per
    500 runs. None when the table is not the schema this reads (then the public API runs)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = {row[1] for row in con.execute("PRAGMA table_info(metrics)")}
        if not {"run_uuid", "key", "step", "value", "timestamp", "is_nan"} <= cols:
            return None
        frames = []
        key_marks = ",".join("?" * len(metrics))
        for i in range(0, len(run_ids), _CHUNK):
            chunk = run_ids[i : i + _CHUNK]
            sql = (
                "SELECT run_uuid AS run_id, key, step, value, timestamp, is_nan FROM metrics "
                f"WHERE key IN ({key_marks}) AND run_uuid IN ({','.join('?' * len(chunk))})"
            )
            frames.append(pd.read_sql_query(sql, con, params=[*metrics, *chunk]))
    finally:
        con.close()
    df = pd.concat(frames, ignore_index=True)
    df.loc[df.pop("is_nan").astype(bool), "value"] = np.nan  # as MLflow reads a NaN back
    return df


def _history_rows(uri: str, run_ids: list[str], metrics: list[str]) -> pd.DataFrame:
    path = sqlite_path(uri)
    if path is not None and os.path.exists(path):
        df = _sqlite_history(path, run_ids, metrics)
        if df is not None:
            return df
    return _api_history(open_client(uri), run_ids, metrics)


def load_history(
    runs: pd.DataFrame | Iterable[str],
    metrics: str | Sequence[str] | None = None,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """Per-step histories in long form: run_id, key, step, value, timestamp (+ arm, seed,
    outcome when ``runs`` is a runs frame). One row per (run, key, step): a step logged
    twice (a resumed trial) keeps its latest value.

    ``metrics`` defaults to every metric the runs logged.

    Read through MLflow's public ``get_metric_history``, except on a SQLite store. There it
    is one query per (run, metric): 86 s for the 1,000 runs x 17 metrics of
    benchmarks/report_scale.py, against about 1 s for one query per 500 runs. So the one fast
    path, ``_sqlite_history``, reads MLflow's ``metrics`` table (read-only, after checking its
    columns). Both give the same frame, to the bit
    (tests/test_analysis_mlflow.py::test_history_fast_path_is_the_public_api).
    """
    frame = runs if isinstance(runs, pd.DataFrame) else None
    run_ids = list(frame["run_id"]) if frame is not None else list(runs)
    if metrics is None:
        metrics = logged_metrics(frame) if frame is not None else []
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if frame is not None and frame.attrs.get("sweep"):
        tracking_uri = tracking_uri or frame.attrs["sweep"]["tracking_uri"]
    uri = tracking_uri or default_tracking_uri()
    if not run_ids or not metrics:
        df = pd.DataFrame(columns=HISTORY_COLUMNS)
    else:
        df = _history_rows(uri, run_ids, metrics)
    df = df.astype({"step": "int64", "value": "float64", "timestamp": "int64"})
    df = (
        df.sort_values(["run_id", "key", "step", "timestamp"])
        .drop_duplicates(["run_id", "key", "step"], keep="last")
        .reset_index(drop=True)
    )
    if frame is not None:
        meta = frame.set_index("run_id")[["arm", "seed", "outcome"]]
        df = df.join(meta, on="run_id")
    return df
