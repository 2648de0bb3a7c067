"""``python -m sweeps reproduce RUN_ID``: rerun a recorded run and compare it metric by metric.

Any run with a ``run_context.json`` (a sweep trial or a standalone ``hrm_core.pretrain``
run with ``tracking.mlflow=true``) can be reproduced:

1. The run and its context are read from MLflow (``MLFLOW_TRACKING_URI``, ``--tracking-uri``
   or the embedded store); the last step of its ``train/lm_loss`` history is where the rerun
   stops.
2. A missing dataset is rebuilt from the recorded recipe (the config's ``data.build``, else
   the dataset's ``build_info.json``) into ``--data-dir``, the recorded path, or the
   project's data dir, in that order of preference.
3. Before any training, the context now is compared with the recorded one (config, git
   commit and diff, dataset fingerprint, torch threads, dtype path, device, compile,
   torch/CUDA/Python/library versions, CPU capability, world size), and every difference is
   printed with what it explains. No difference means bitwise identical metrics.
4. The recorded config is trained again standalone (no Ray): same torch thread count, same
   schedule (``max_steps`` unchanged: the cosine LR depends on it), stopped at the original's
   last step (``Trainer.fit(stop_at=...)``), checkpoints in ``--out`` (default
   ``checkpoints/reproduce/<run_id>/``). It logs to a new MLflow run in the original's
   experiment, tagged ``hrm.run_kind=reproduce`` and ``hrm.reproduces=<run_id>``.
5. Every metric the original logged (timings excluded: ``perf/*``, ``compute/*_seconds``)
   is compared at every step both runs have: steps compared, bitwise-equal count (NaN equals
   NaN), max abs difference, first differing step. The rerun is tagged
   ``hrm.reproduce_match`` = ``bitwise`` | ``differs``. Exit code 0 (``--strict``: 1 unless
   bitwise); 2 with a one-line ``error:`` for an unknown run or a run without context.

``--set KEY=VALUE`` changes the recorded config (e.g. ``--set seed=1``) and ``--device``
the device; both are reported as differences.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hrm_core import names
from hrm_core.errors import UserError

MARKER = ".hrm_reproduce"  # marks an output folder reproduce may empty
# Config keys that name where a run writes, not what it computes.
BOOKKEEPING_KEYS = ("checkpoint_path", "resume_from", "init_from", "progress", "run_name", "project_name", "tracking.", "data_path")

_EXPLAIN = {
    "config": "a different configuration: metrics differ",
    "seed": "different model init and ACT exploration streams: metrics differ from step 1",
    "data_seed": "a different data order: metrics differ from step 1",
    "git": "the code changed since the original: metrics may differ wherever the change touches the model, data, loss or optimizer",
    "git_diff": "the uncommitted changes differ from the original's (its diff is the git_diff.patch artifact)",
    "dataset": "the data differ (other batches and eval puzzles): metrics differ",
    "threads": "another intra-op thread count reorders float reductions: last-bit differences that can grow",
    "dtype": "a different arithmetic path: metrics differ",
    "device": "other kernels on another device: not bitwise, close at best",
    "compile": "torch.compile fuses kernels differently: not bitwise",
    "torch": "kernels may change between torch versions",
    "cuda": "kernels may change between CUDA versions",
    "cpu_capability": "ATen picks other vectorised kernels (e.g. AVX2 vs AVX512): small float differences",
    "cpu_bf16": "native bf16 kernels or emulated ones: another low-precision path",
    "gpu": "another GPU model: other kernels and reduction orders",
    "world_size": "the original ran on several DDP ranks; the rerun is one process (other exploration streams, all-reduce order): not bitwise",
    "python": "another Python version (rarely matters for the numbers)",
    "packages": "library versions differ: numerics may differ",
}


@dataclass
class Difference:
    what: str
    recorded: Any
    now: Any
    explains: str

    def line(self) -> str:
        return f"  - {self.what}: recorded {_short(self.recorded)}, now {_short(self.now)} -> {self.explains}"


@dataclass
class Comparison:
    key: str
    steps: int = 0
    equal: int = 0
    max_abs: float = 0.0
    first_diff: int | None = None
    missing: int = 0  # steps the original logged that the rerun did not

    @property
    def bitwise(self) -> bool:
        return self.steps > 0 and self.equal == self.steps and self.missing == 0


@dataclass
class Result:
    run_id: str  # the rerun's MLflow run
    match: bool
    differences: list[Difference] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    out_dir: str = ""


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- reading the original ----------------------------------------------------------------------
def load_original(client, run_id: str):
    """The run and its recorded context; one-line UserErrors for what is missing."""
    try:
        run = client.get_run(run_id)
    except Exception as err:  # noqa: BLE001 - MlflowException for unknown ids, bad formats...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"unknown run id '{run_id}' in {_redact(client.tracking_uri)} ({_short(first, 120)})") from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep the output readable
    with tempfile.TemporaryDirectory(prefix="hrm-reproduce-") as tmp:
        try:
            local = client.download_artifacts(run_id, names.RUN_CONTEXT_ARTIFACT, tmp)
            with open(local) as f:
                context = json.load(f)
        except Exception:  # noqa: BLE001 - not there (older run, trial that never started)
            raise UserError(
                f"run {run_id} has no {names.RUN_CONTEXT_ARTIFACT} (recorded before run contexts existed, or it never started training)"
            ) from None
    if "config" not in context:
        raise UserError(f"run {run_id}: {names.RUN_CONTEXT_ARTIFACT} has no config")
    return run, context


def _redact(uri: str) -> str:
    try:
        from sweeps.tracking_health import redact

        return redact(uri)
    except Exception:  # noqa: BLE001
        return uri


def last_step(client, run_id: str) -> int:
    history = client.get_metric_history(run_id, names.TRAIN_LM_LOSS)
    if not history:
        raise UserError(f"run {run_id} logged no {names.TRAIN_LM_LOSS}: nothing to rerun or compare")
    return max(m.step for m in history)


# --- config ------------------------------------------------------------------------------------
def apply_sets(config: dict, sets: list[str]) -> tuple[dict, set[str]]:
    """``KEY=VALUE`` overrides (YAML values) on the recorded config dict."""
    import copy

    import yaml

    from hrm_core.config.schema import VALID_KEYS
    from hrm_core.errors import unknown_key_message

    config = copy.deepcopy(config)
    keys = set()
    for item in sets:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set seed=1")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in VALID_KEYS:
            raise UserError(unknown_key_message(key, VALID_KEYS, where="--set"))
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = yaml.safe_load(raw)
        keys.add(key)
    return config, keys


# --- dataset -----------------------------------------------------------------------------------
def _creatable(path: str) -> bool:
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return bool(parent) and os.access(parent, os.W_OK)


def ensure_dataset(cfg, dataset: dict, data_dir: str | None, log: Callable[[str], None]) -> tuple[str, str | None]:
    """The dataset path to train on, rebuilt from the recorded recipe when missing.

    Returns (path, note): the note says where and how it was rebuilt (None when present)."""
    from hrm_core.data.resolve import BUILDERS, default_data_dir

    recorded = os.path.abspath(cfg.data_path or dataset.get("path") or default_data_dir(cfg.data.name))
    if os.path.isdir(os.path.join(recorded, "train")):
        return recorded, None
    name = os.path.basename(recorded.rstrip("/"))
    if data_dir:
        target = os.path.join(os.path.abspath(data_dir), name)
    elif _creatable(recorded):
        target = recorded
    else:
        target = default_data_dir(cfg.data.name if cfg.data.name != "custom" else name)
    if os.path.isdir(os.path.join(target, "train")):
        return target, f"dataset missing at {recorded}; using {target}" if target != recorded else None
    recipe = cfg.data.build.model_dump() if cfg.data.build is not None else dataset.get("recipe")
    info = dataset.get("build_info") or {}
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if recipe:
        log(f"rebuilding dataset {name} from its recipe ({recipe['builder']}, {recipe.get('args', {})}) into {target}")
        tmp = f"{target}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        BUILDERS[recipe["builder"]](tmp, **recipe.get("args", {}))
        if os.path.exists(target):  # a partial folder without train/
            shutil.rmtree(target)
        os.replace(tmp, target)
        how = f"{recipe['builder']} recipe"
    elif info.get("builder") and info.get("argv"):
        import importlib

        argv = list(info["argv"])
        if "--output-dir" in argv:
            argv[argv.index("--output-dir") + 1] = target
        else:
            argv = ["--output-dir", target, *argv]
        log(f"rebuilding dataset {name} with python -m {info['builder']} {' '.join(argv)}")
        code = importlib.import_module(info["builder"]).main(argv)
        if code:
            raise UserError(f"rebuilding {target} with {info['builder']} failed (exit {code})")
        how = f"{info['builder']} build_info.json"
    else:
        raise UserError(f"dataset not found: {recorded}, and the run recorded no recipe to rebuild it (no data.build, no build_info.json)")
    return target, f"dataset missing at {recorded}: rebuilt into {target} from the recorded {how}"


# --- comparing contexts --------------------------------------------------------------------------
def _flat(config: dict) -> dict[str, Any]:
    from hrm_core.config.schema import flatten

    return {k: v for k, v in flatten(config).items() if not k.startswith(BOOKKEEPING_KEYS)}


def compare_contexts(recorded: dict, now: dict, sets: set[str], device_override: bool) -> tuple[list[Difference], list[str]]:
    """(differences that can change metrics, notes that do not)."""
    diffs: list[Difference] = []
    notes: list[str] = []
    rc, nc = _flat(recorded.get("config", {})), _flat(now.get("config", {}))
    for key in sorted(set(rc) | set(nc)):
        if rc.get(key) == nc.get(key):
            continue
        if key == "device" or key == "threads":
            continue  # reported below, from the hardware section
        why = _EXPLAIN.get(key, _EXPLAIN["config"])
        if key in sets:
            why = f"set with --set: {why}"
        diffs.append(Difference(f"config {key}", rc.get(key, "(unset)"), nc.get(key, "(unset)"), why))

    rg, ng = recorded.get("git") or {}, now.get("git") or {}
    if rg.get("commit") != ng.get("commit"):
        diffs.append(Difference("git commit", rg.get("commit"), ng.get("commit"), _EXPLAIN["git"]))
    if (rg.get("dirty") or ng.get("dirty")) and rg.get("diff_sha256") != ng.get("diff_sha256"):
        lines = lambda g: f"dirty, diff {g.get('diff_sha256')} ({len((g.get('diff') or '').splitlines())} lines)" if g.get("dirty") else "clean"  # noqa: E731
        diffs.append(Difference("uncommitted changes", lines(rg), lines(ng), _EXPLAIN["git_diff"]))
    elif rg.get("dirty"):
        notes.append(f"the original ran on a dirty tree (diff {rg.get('diff_sha256')}); the tree now has the same diff")

    rd, nd = recorded.get("dataset") or {}, now.get("dataset") or {}
    if rd.get("fingerprint") != nd.get("fingerprint"):
        diffs.append(Difference(f"dataset fingerprint ({nd.get('path')})", rd.get("fingerprint"), nd.get("fingerprint"), _EXPLAIN["dataset"]))

    rh, nh = recorded.get("hardware") or {}, now.get("hardware") or {}
    checks = [
        ("torch threads", "torch_threads", "threads"),
        ("forward dtype", "forward_dtype", "dtype"),
        ("low_precision_gemm", "low_precision_gemm", "dtype"),
        ("device", "device", "device"),
        ("compile", "compile", "compile"),
        ("torch version", "torch", "torch"),
        ("CUDA version", "cuda", "cuda"),
        ("CPU capability", "cpu_capability", "cpu_capability"),
        ("world size", "world_size", "world_size"),
    ]
    for label, key, explain in checks:
        if key in rh and rh.get(key) != nh.get(key):
            why = _EXPLAIN[explain]
            if key == "device" and device_override:
                why = f"set with --device: {why}"
            diffs.append(Difference(label, rh.get(key), nh.get(key), why))
    low_precision = (now.get("config", {}).get("arch") or {}).get("forward_dtype") != "float32"
    if low_precision and "cpu_native_bf16" in rh and rh.get("cpu_native_bf16") != nh.get("cpu_native_bf16") and nh.get("device") == "cpu":
        diffs.append(Difference("CPU native bf16", rh.get("cpu_native_bf16"), nh.get("cpu_native_bf16"), _EXPLAIN["cpu_bf16"]))
    if nh.get("device") == "cuda" and rh.get("gpu") != nh.get("gpu"):
        diffs.append(Difference("GPU model", rh.get("gpu"), nh.get("gpu"), _EXPLAIN["gpu"]))
    if rh.get("cpu_model") != nh.get("cpu_model"):
        notes.append(f"CPU model: recorded {rh.get('cpu_model')!r}, now {nh.get('cpu_model')!r} (the same CPU capability usually keeps results bitwise)")

    rs, ns = recorded.get("software") or {}, now.get("software") or {}
    if rs.get("python") != ns.get("python"):
        diffs.append(Difference("Python version", rs.get("python"), ns.get("python"), _EXPLAIN["python"]))
    rp, np_ = _packages(rs.get("pip_freeze")), _packages(ns.get("pip_freeze"))
    changed = sorted(k for k in set(rp) | set(np_) if rp.get(k) != np_.get(k) and k not in _OWN_PACKAGES)
    if rp and changed:
        shown = ", ".join(f"{k} {rp.get(k, '-')}->{np_.get(k, '-')}" for k in changed[:6]) + (f" (+{len(changed) - 6} more)" if len(changed) > 6 else "")
        diffs.append(Difference("installed packages", f"{len(rp)} packages", f"{len(changed)} changed: {shown}", _EXPLAIN["packages"]))
    host_r, host_n = (recorded.get("host") or {}).get("hostname"), (now.get("host") or {}).get("hostname")
    if host_r != host_n:
        notes.append(f"host: recorded {host_r}, now {host_n}")
    return diffs, notes


_OWN_PACKAGES = {"hrm-ablate", "hrm_ablate"}  # the project itself: its code is compared through git


def _packages(lines) -> dict[str, str]:
    out = {}
    for line in lines or []:
        name, _, version = line.partition("==")
        out[name.lower().replace("_", "-")] = version
    return out


# --- comparing metrics ---------------------------------------------------------------------------
def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare_metrics(client, original_id: str, rerun_id: str, upto: int) -> tuple[list[Comparison], list[str]]:
    """Per metric key the original logged (timings excluded): exact comparison at common steps."""
    keys = sorted(client.get_run(original_id).data.metrics)
    rerun_keys = set(client.get_run(rerun_id).data.metrics)
    out = []
    for key in keys:
        if names.is_timing(key) or key == names.RESUMED_FROM_STEP:
            continue
        a = {s: v for s, v in _history(client, original_id, key).items() if s <= upto}
        b = _history(client, rerun_id, key) if key in rerun_keys else {}
        c = Comparison(key)
        for step in sorted(a):
            if step not in b:
                c.missing += 1
                continue
            c.steps += 1
            if _same(a[step], b[step]):
                c.equal += 1
            else:
                diff = abs(a[step] - b[step])
                c.max_abs = max(c.max_abs, diff) if not math.isnan(diff) else math.inf
                if c.first_diff is None:
                    c.first_diff = step
        out.append(c)
    only_rerun = sorted(k for k in rerun_keys - set(keys) if not names.is_timing(k))
    return out, only_rerun


def format_table(comparisons: list[Comparison]) -> str:
    width = max([len("metric")] + [len(c.key) for c in comparisons])
    missing = any(c.missing for c in comparisons)
    head = f"  {'metric':<{width}}  {'steps':>5}  {'bitwise':>7}" + (f"  {'missing':>7}" if missing else "")
    rows = [head + f"  {'max |diff|':>10}  {'first diff':>10}"]
    for c in comparisons:
        first = "-" if c.first_diff is None else str(c.first_diff)
        row = f"  {c.key:<{width}}  {c.steps:>5}  {c.equal:>7}" + (f"  {c.missing:>7}" if missing else "")
        rows.append(row + f"  {c.max_abs:>10.3g}  {first:>10}")
    return "\n".join(rows)


# --- the command ---------------------------------------------------------------------------------
def reproduce(
    run_id: str,
    *,
    device: str | None = None,
    tracking_uri: str | None = None,
    out: str | None = None,
    sets: list[str] | None = None,
    data_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Result:
    import torch

    from hrm_core.config.compose import to_yaml
    from hrm_core.config.schema import validate_config
    from hrm_core.observe.callbacks import JsonlSink
    from hrm_core.observe.provenance import git_commit, git_dirty
    from hrm_core.observe.run_context import build_run_context
    from hrm_core.paths import project_root
    from hrm_core.tracking.sink import MlflowSink, get_client
    from hrm_core.train.hardware import resolve_device

    log = log or (lambda msg: print(msg, flush=True))
    client = get_client(tracking_uri)
    original, recorded = load_original(client, run_id)
    upto = last_step(client, run_id)
    experiment = client.get_experiment(original.info.experiment_id).name
    tags = original.data.tags
    kind = tags.get(names.TAG_RUN_KIND, "run")
    log(f"reproducing {kind} run {run_id} ({original.info.run_name}, experiment {experiment}) to its last step {upto}")

    # config: the recorded one, with --set and --device on top
    config, set_keys = apply_sets(recorded["config"], list(sets or []))
    if device:
        config["device"] = resolve_device(device).type
    cfg = validate_config(config)
    try:
        dev = resolve_device(cfg.device)
    except UserError:
        raise UserError(f"the run trained on device={cfg.device}, which this machine lacks: pass --device cpu (reported as a difference)") from None
    if dev.type == "cuda" and cfg.device != "cuda":
        cfg = cfg.model_copy(update={"device": "cuda"})
    recorded_threads = (recorded.get("hardware") or {}).get("torch_threads")
    threads = int(cfg.threads if "threads" in set_keys or not recorded_threads else recorded_threads)

    data_path, data_note = ensure_dataset(cfg, recorded.get("dataset") or {}, data_dir, log)
    run_dir = os.path.abspath(out or os.path.join(project_root(), "checkpoints", "reproduce", names.safe_name(run_id)))
    cfg = cfg.model_copy(update={"data_path": data_path, "checkpoint_path": run_dir, "resume_from": None, "init_from": None, "progress": False})

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        now = build_run_context(cfg, data_path, dev, world_size=1)
        # paths are bookkeeping: compare the recorded config with ours modulo where it writes
        diffs, notes = compare_contexts(recorded, now, set_keys, device_override=bool(device))
        if data_note:
            notes.insert(0, data_note)
        resumed = client.get_metric_history(run_id, names.RESUMED_FROM_STEP)
        if resumed:
            notes.append(f"the original resumed from checkpoints at step(s) {sorted(m.step for m in resumed)} (resume is exact in this trainer)")
        for note in notes:
            log(f"note: {note}")
        if diffs:
            log(f"differences from the original run ({len(diffs)}), before the rerun:")
            for d in diffs:
                log(d.line())
        else:
            log("no differences in config, code, data, threads, dtype path, device or versions: metrics are expected to be bitwise identical")

        if os.path.exists(run_dir) and os.listdir(run_dir) and not os.path.exists(os.path.join(run_dir, MARKER)):
            raise UserError(f"--out {run_dir} exists and is not a reproduce folder; choose another --out")
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        open(os.path.join(run_dir, MARKER), "w").close()
        with open(os.path.join(run_dir, "config.yaml"), "w") as f:
            f.write(to_yaml(cfg))

        new_tags = {
            names.TAG_RUN_KIND: names.RUN_KIND_REPRODUCE,
            names.TAG_REPRODUCES: run_id,
            names.TAG_SEED: str(cfg.seed),
            names.TAG_GIT_COMMIT: git_commit(),
            names.TAG_GIT_DIRTY: str(git_dirty()).lower(),
            names.TAG_DATASET_FINGERPRINT: str((now.get("dataset") or {}).get("fingerprint", "")),
        }
        for key in (names.TAG_ARM, names.TAG_SWEEP, names.TAG_TRIAL_ID):
            if tags.get(key):
                new_tags[key] = tags[key]
        sink = MlflowSink(experiment, f"reproduce/{original.info.run_name}", tags=new_tags, uri=client.tracking_uri, upload_best_checkpoint=False)
        from hrm_core.train.trainer import Trainer

        log(f"rerunning on {dev.type} with {threads} torch thread(s) to step {upto}; checkpoints in {run_dir}")
        trainer = Trainer(cfg, data_path, run_dir, dev, [JsonlSink(run_dir), sink], log=log)
        outcome = trainer.fit(stop_at=upto)
    finally:
        torch.set_num_threads(previous_threads)

    comparisons, only_rerun = compare_metrics(client, run_id, sink.run_id, upto)
    match = bool(comparisons) and all(c.bitwise for c in comparisons)
    client.set_tag(sink.run_id, names.TAG_REPRODUCE_MATCH, "bitwise" if match else "differs")
    log(f"rerun {sink.run_id} ({outcome} at step {trainer.step}); metric by metric against {run_id}:")
    log(format_table(comparisons))
    if only_rerun:
        log(f"  (not compared: {len(only_rerun)} key(s) only the rerun logged, e.g. {', '.join(only_rerun[:3])})")
    n_steps = max((c.steps for c in comparisons), default=0)
    if match:
        log(f"verdict: bitwise identical: {len(comparisons)} metrics at up to {n_steps} steps each")
    else:
        bad = [c for c in comparisons if not c.bitwise]
        first = min((c for c in bad if c.first_diff is not None), key=lambda c: c.first_diff, default=None)
        where = f", first at step {first.first_diff} ({first.key})" if first else ""
        why = " (expected: see the differences above)" if diffs else " (unexpected: the contexts match)"
        log(f"verdict: differs: {len(bad)} of {len(comparisons)} metrics not bitwise{where}{why}")
    return Result(sink.run_id, match, diffs, comparisons, run_dir)


def main(args) -> int:
    result = reproduce(
        args.run_id, device=args.device, tracking_uri=args.tracking_uri, out=args.out, sets=args.set, data_dir=args.data_dir
    )
    return 1 if args.strict and not result.match else 0


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="rerun a recorded run (trial or standalone) and compare its metrics bitwise")
    p.add_argument("run_id", help="the MLflow run id of the run to reproduce")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the recorded device (reported as a difference)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the embedded store)")
    p.add_argument("--out", help="checkpoint folder of the rerun (default: checkpoints/reproduce/<run_id>/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a key of the recorded config, e.g. --set seed=1 (reported as a difference); repeatable")
    p.add_argument("--data-dir", help="where to rebuild a missing dataset (default: its recorded path, else the project's data/)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the metrics are not bitwise identical")


if __name__ == "__main__":  # pragma: no cover - use python -m sweeps reproduce
    sys.exit("use: python -m sweeps reproduce RUN_ID")
