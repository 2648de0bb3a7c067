"""Step 2, before anything trains: the context of the rerun against the original's. Every
difference that can change the metrics is named with what it explains; the others are notes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeps.reproduce.load import Original, short
from sweeps.reproduce.plan import Plan

# Config keys that name where a run writes, not what it computes.
BOOKKEEPING_KEYS = ("checkpoint_path", "resume_from", "init_from", "progress", "run_name", "project_name",
                    "tracking.", "data_path")
OWN_PACKAGES = {"hrm-ablate", "hrm_ablate"}  # the project itself: its code is compared through git

EXPLAIN = {
    "config": "a different configuration: metrics differ",
    "seed": "different model init and ACT exploration streams: metrics differ from step 1",
    "data_seed": "a different data order: metrics differ from step 1",
    "git": "the code changed since the original: metrics may differ wherever the change touches the model, "
           "data, loss or optimizer",
    "git_diff": "the uncommitted changes differ from the original's "
                "(its diff is the git_diff.patch artifact)",
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
    "world_size": "the original ran on several DDP ranks; the rerun is one process "
                  "(other exploration streams, all-reduce order): not bitwise",
    "python": "another Python version (rarely matters for the numbers)",
    "packages": "library versions differ: numerics may differ",
}
# (label, key in the hardware section, explanation)
HARDWARE_CHECKS = (
    ("torch threads", "torch_threads", "threads"),
    ("forward dtype", "forward_dtype", "dtype"),
    ("low_precision_gemm", "low_precision_gemm", "dtype"),
    ("device", "device", "device"),
    ("compile", "compile", "compile"),
    ("torch version", "torch", "torch"),
    ("CUDA version", "cuda", "cuda"),
    ("CPU capability", "cpu_capability", "cpu_capability"),
    ("world size", "world_size", "world_size"),
)


@dataclass
class Difference:
    what: str
    recorded: Any
    now: Any
    explains: str

    def line(self) -> str:
        return f"  - {self.what}: recorded {short(self.recorded)}, now {short(self.now)} -> {self.explains}"


def context_now(plan: Plan) -> dict[str, Any]:
    """The rerun's run context (read under the plan's torch thread count)."""
    from hrm_core.observe.run_context import build_run_context

    return build_run_context(plan.cfg, plan.data_path, plan.device, world_size=1)


def differences(original: Original, plan: Plan, now: dict,
                device_override: bool) -> tuple[list[Difference], list[str]]:
    """(differences that can change metrics, notes that do not), for the command to print."""
    diffs, notes = compare_contexts(original.context, now, plan.set_keys, device_override)
    if plan.data_note:
        notes.insert(0, plan.data_note)
    if original.resumed_at:
        notes.append(f"the original resumed from checkpoints at step(s) {original.resumed_at} "
                     "(resume is exact in this trainer)")
    return diffs, notes


def compare_contexts(recorded: dict, now: dict, sets: set[str],
                     device_override: bool) -> tuple[list[Difference], list[str]]:
    """(differences that can change metrics, notes that do not)."""
    diffs: list[Difference] = []
    notes: list[str] = []
    diffs += _config(recorded.get("config", {}), now.get("config", {}), sets)
    _git(recorded.get("git") or {}, now.get("git") or {}, diffs, notes)
    rd, nd = recorded.get("dataset") or {}, now.get("dataset") or {}
    if rd.get("fingerprint") != nd.get("fingerprint"):
        diffs.append(Difference(f"dataset fingerprint ({nd.get('path')})", rd.get("fingerprint"),
                                nd.get("fingerprint"), EXPLAIN["dataset"]))
    low_precision = (now.get("config", {}).get("arch") or {}).get("forward_dtype") != "float32"
    rh, nh = recorded.get("hardware") or {}, now.get("hardware") or {}
    _hardware(rh, nh, device_override, low_precision, diffs, notes)
    _software(recorded.get("software") or {}, now.get("software") or {}, diffs)
    host_r, host_n = (recorded.get("host") or {}).get("hostname"), (now.get("host") or {}).get("hostname")
    if host_r != host_n:
        notes.append(f"host: recorded {host_r}, now {host_n}")
    return diffs, notes


def _flat(config: dict) -> dict[str, Any]:
    from hrm_core.config.schema import flatten

    return {k: v for k, v in flatten(config).items() if not k.startswith(BOOKKEEPING_KEYS)}


def _config(recorded: dict, now: dict, sets: set[str]) -> list[Difference]:
    """Config keys that differ; paths are bookkeeping, device and threads come from the hardware."""
    rc, nc = _flat(recorded), _flat(now)
    diffs = []
    for key in sorted(set(rc) | set(nc)):
        if rc.get(key) == nc.get(key) or key in ("device", "threads"):
            continue
        why = EXPLAIN.get(key, EXPLAIN["config"])
        if key in sets:
            why = f"set with --set: {why}"
        diffs.append(Difference(f"config {key}", rc.get(key, "(unset)"), nc.get(key, "(unset)"), why))
    return diffs


def _git(rg: dict, ng: dict, diffs: list[Difference], notes: list[str]) -> None:
    if rg.get("commit") != ng.get("commit"):
        diffs.append(Difference("git commit", rg.get("commit"), ng.get("commit"), EXPLAIN["git"]))
    if (rg.get("dirty") or ng.get("dirty")) and rg.get("diff_sha256") != ng.get("diff_sha256"):
        def state(g: dict) -> str:
            if not g.get("dirty"):
                return "clean"
            return f"dirty, diff {g.get('diff_sha256')} ({len((g.get('diff') or '').splitlines())} lines)"

        diffs.append(Difference("uncommitted changes", state(rg), state(ng), EXPLAIN["git_diff"]))
    elif rg.get("dirty"):
        notes.append(f"the original ran on a dirty tree (diff {rg.get('diff_sha256')}); "
                     "the tree now has the same diff")


def _hardware(rh: dict, nh: dict, device_override: bool, low_precision: bool, diffs: list[Difference],
              notes: list[str]) -> None:
    for label, key, explain in HARDWARE_CHECKS:
        if key in rh and rh.get(key) != nh.get(key):
            why = EXPLAIN[explain]
            if key == "device" and device_override:
                why = f"set with --device: {why}"
            diffs.append(Difference(label, rh.get(key), nh.get(key), why))
    bf16 = "cpu_native_bf16"
    if low_precision and bf16 in rh and rh.get(bf16) != nh.get(bf16) and nh.get("device") == "cpu":
        diffs.append(Difference("CPU native bf16", rh.get(bf16), nh.get(bf16), EXPLAIN["cpu_bf16"]))
    if nh.get("device") == "cuda" and rh.get("gpu") != nh.get("gpu"):
        diffs.append(Difference("GPU model", rh.get("gpu"), nh.get("gpu"), EXPLAIN["gpu"]))
    if rh.get("cpu_model") != nh.get("cpu_model"):
        notes.append(f"CPU model: recorded {rh.get('cpu_model')!r}, now {nh.get('cpu_model')!r} "
                     "(the same CPU capability usually keeps results bitwise)")


def _software(rs: dict, ns: dict, diffs: list[Difference]) -> None:
    if rs.get("python") != ns.get("python"):
        diffs.append(Difference("Python version", rs.get("python"), ns.get("python"), EXPLAIN["python"]))
    rp, np_ = _packages(rs.get("pip_freeze")), _packages(ns.get("pip_freeze"))
    changed = sorted(k for k in set(rp) | set(np_) if rp.get(k) != np_.get(k) and k not in OWN_PACKAGES)
    if rp and changed:
        shown = ", ".join(f"{k} {rp.get(k, '-')}->{np_.get(k, '-')}" for k in changed[:6])
        if len(changed) > 6:
            shown += f" (+{len(changed) - 6} more)"
        diffs.append(Difference("installed packages", f"{len(rp)} packages",
                                f"{len(changed)} changed: {shown}", EXPLAIN["packages"]))


def _packages(lines) -> dict[str, str]:
    out = {}
    for line in lines or []:
        name, _, version = line.partition("==")
        out[name.lower().replace("_", "-")] = version
    return out
