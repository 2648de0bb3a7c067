"""``python -m sweeps reproduce``: load -> plan -> rerun -> compare, and its arguments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hrm_core import names
from sweeps.prune import pruned_note
from sweeps.reproduce.compare import Comparison, compare_metrics, format_table, matches, verdict
from sweeps.reproduce.context import Difference, context_now, differences
from sweeps.reproduce.load import load_original
from sweeps.reproduce.plan import make_plan
from sweeps.reproduce.rerun import rerun, torch_threads


@dataclass
class Result:
    run_id: str  # the rerun's MLflow run
    match: bool
    differences: list[Difference] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    out_dir: str = ""


def reproduce(run_id: str, *, device: str | None = None, tracking_uri: str | None = None,
              out: str | None = None, sets: list[str] | None = None, data_dir: str | None = None,
              log: Callable[[str], None] | None = None) -> Result:
    from hrm_core.tracking.client import get_client

    log = log or (lambda msg: print(msg, flush=True))
    client = get_client(tracking_uri)
    original = load_original(client, run_id)
    kind = original.tags.get(names.TAG_RUN_KIND, "run")
    log(f"reproducing {kind} run {run_id} ({original.run.info.run_name}, experiment {original.experiment}) "
        f"to its last step {original.last_step}")
    if (pruned := pruned_note(client, original.tags)) is not None:
        log(f"note: {pruned}")
    plan = make_plan(original, device=device, out=out, sets=list(sets or []), data_dir=data_dir, log=log)
    with torch_threads(plan.threads):
        now = context_now(plan)
        diffs, notes = differences(original, plan, now, device_override=bool(device))
        _report(diffs, notes, log)
        trained = rerun(original, plan, now, client.tracking_uri, log)

    comparisons, only_rerun = compare_metrics(client, run_id, trained.mlflow_run_id, original.last_step)
    match = matches(comparisons)
    client.set_tag(trained.mlflow_run_id, names.TAG_REPRODUCE_MATCH, "bitwise" if match else "differs")
    log(f"rerun {trained.mlflow_run_id} ({trained.outcome} at step {trained.trainer.step}); "
        f"metric by metric against {run_id}:")
    log(format_table(comparisons))
    if only_rerun:
        log(f"  (not compared: {len(only_rerun)} key(s) only the rerun logged, "
            f"e.g. {', '.join(only_rerun[:3])})")
    log(verdict(comparisons, expected_differences=bool(diffs)))
    return Result(trained.mlflow_run_id, match, diffs, comparisons, plan.run_dir)


def _report(diffs: list[Difference], notes: list[str], log: Callable[[str], None]) -> None:
    for note in notes:
        log(f"note: {note}")
    if diffs:
        log(f"differences from the original run ({len(diffs)}), before the rerun:")
        for d in diffs:
            log(d.line())
    else:
        log("no differences in config, code, data, threads, dtype path, device or versions: "
            "metrics are expected to be bitwise identical")


def main(args) -> int:
    result = reproduce(args.run_id, device=args.device, tracking_uri=args.tracking_uri, out=args.out,
                       sets=args.set, data_dir=args.data_dir)
    return 1 if args.strict and not result.match else 0


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce",
                       help="rerun a recorded run (trial or standalone) and compare its metrics bitwise")
    p.add_argument("run_id", help="the MLflow run id of the run to reproduce")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"],
                   help="override the recorded device (reported as a difference)")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the embedded store)")
    p.add_argument("--out", help="checkpoint folder of the rerun (default: checkpoints/reproduce/<run_id>/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a key of the recorded config, e.g. --set seed=1 --set 'arch.hidden_size=128' "
                   "(reported as a difference); repeatable; the override grammar of pretrain and sweeps")
    p.add_argument("--data-dir",
                   help="where to rebuild a missing dataset "
                   "(default: its recorded path, else the project's data/)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the metrics are not bitwise identical")
