"""``python -m analysis.dashboard [SWEEP] [--port 8080]``: serve the Optuna study of the
latest search invocation (of SWEEP, or of any sweep) with ``optuna-dashboard``, on
loopback only.

The study's location is the parent run's ``hrm.optuna_storage`` tag (the sweep driver
sets it when a search starts); the dashboard opens that storage, which holds the one
study of that invocation. Bad requests (no store, an unknown sweep, an ablation, no
search yet, a study file that is gone, optuna-dashboard not installed) print one
``error: ...`` line and exit 2, before any server starts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from analysis.cli_args import OneLineParser
from analysis.loading import AnalysisError, default_tracking_uri, open_client
from hrm_core import names

HOST = "127.0.0.1"  # loopback only: the dashboard can edit the study (notes, trial states)
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Target:
    """Where a search invocation keeps its Optuna study."""

    sweep: str
    parent_run_id: str
    parent_run_name: str
    storage: str
    study: str


def _latest_search(client, experiment_ids: list[str]):
    """The newest parent run of a search among these experiments, or None."""
    where = (f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_SWEEP}' "
             f"AND tags.`{names.TAG_SWEEP_KIND}` = 'search'")
    runs = client.search_runs(experiment_ids, where, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def _is_ablation(client, experiment_id: str) -> bool:
    where = f"tags.`{names.TAG_SWEEP_KIND}` = 'ablation'"
    return bool(client.search_runs([experiment_id], where, max_results=1))


def resolve(sweep: str | None = None, tracking_uri: str | None = None) -> Target:
    """The study of the latest search invocation of ``sweep`` (or of any sweep), from its
    parent run's tags. Raises AnalysisError (one line) when there is none to serve."""
    uri = tracking_uri or default_tracking_uri()
    client = open_client(uri)
    prefix = f"name LIKE '{names.EXPERIMENT_PREFIX}%'"
    experiments = client.search_experiments(filter_string=prefix, max_results=1000)
    known = sorted(e.name.removeprefix(names.EXPERIMENT_PREFIX) for e in experiments)
    if sweep is not None:
        experiments = [e for e in experiments if e.name == names.experiment_name(sweep)]
        if not experiments:
            shown = ", ".join(known) or "none"
            raise AnalysisError(f"unknown sweep '{sweep}' at {uri} (known sweeps: {shown})")
    parent = _latest_search(client, [e.experiment_id for e in experiments]) if experiments else None
    if parent is None:
        if sweep is not None and _is_ablation(client, experiments[0].experiment_id):
            raise AnalysisError(f"sweep '{sweep}' is an ablation: it has no Optuna study (searches have one)")
        where = f"sweep '{sweep}'" if sweep else uri
        raise AnalysisError(f"no search invocation in {where}: nothing to serve "
                            "(run a search first, e.g. make sweep-gate-bias)")
    tags = parent.data.tags
    storage, study = tags.get(names.TAG_OPTUNA_STORAGE, ""), tags.get(names.TAG_OPTUNA_STUDY, "")
    name = tags.get(names.TAG_SWEEP, sweep or "")
    if not storage:
        raise AnalysisError(f"parent run {parent.info.run_id} of search '{name}' has no "
                            f"{names.TAG_OPTUNA_STORAGE} tag: its study's location is unknown")
    path = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else None
    if path is not None and not os.path.exists(path):
        raise AnalysisError(f"the Optuna study of {name} ({parent.info.run_id}) is gone: no file {path}")
    return Target(name, parent.info.run_id, parent.info.run_name or "", storage, study)


def command(target: Target, port: int = DEFAULT_PORT) -> list[str]:
    """The optuna-dashboard command line for ``target``, bound to loopback, on the standard
    library's WSGI server (one process; gunicorn would also write a control socket to ~)."""
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which(
        "optuna-dashboard")
    if exe is None or importlib.util.find_spec("optuna_dashboard") is None:
        raise AnalysisError("optuna-dashboard is not installed: pip install optuna-dashboard "
                            "(the project's report extra has it: make install)")
    return [exe, target.storage, "--host", HOST, "--port", str(port), "--server", "wsgiref"]


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m analysis.dashboard",
                description="Serve the Optuna study of the latest search invocation with optuna-dashboard.")
    p.add_argument("sweep", nargs="?", help="sweep name (default: the latest search of any sweep)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT})")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the embedded store)")
    p.add_argument("--print", action="store_true", dest="dry_run",
                   help="print the command instead of starting the server")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    import logging

    from mlflow.exceptions import MlflowException

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        if not 0 < args.port < 65536:
            raise AnalysisError(f"--port {args.port} is not a TCP port (1-65535)")
        target = resolve(args.sweep, args.tracking_uri)
        cmd = command(target, args.port)
    except (AnalysisError, MlflowException) as e:
        text = str(e).strip()
        print(f"error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    print(f"{target.sweep}: study {target.study} of parent run {target.parent_run_id} "
          f"({target.parent_run_name}), {target.storage}\nhttp://{HOST}:{args.port}/  (Ctrl-C stops)",
          flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
