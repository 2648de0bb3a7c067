"""Step 2 of reproduce: what the rerun will be. The recorded config with ``--set`` and
``--device`` on top, the device and torch thread count it runs with, its dataset (rebuilt
from the recorded recipe when missing) and its checkpoint folder."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hrm_core import names
from hrm_core.errors import UserError
from sweeps.reproduce.load import Original


@dataclass
class Plan:
    cfg: Any  # the TrainConfig to train
    device: Any  # its torch.device
    threads: int  # torch threads: the original's, unless set with --set threads=N
    data_path: str
    data_note: str | None  # where and how a missing dataset was rebuilt
    set_keys: set[str]  # the keys --set changed
    run_dir: str


def make_plan(original: Original, *, device: str | None, out: str | None, sets: list[str],
              data_dir: str | None, log: Callable[[str], None]) -> Plan:
    """The rerun of ``original``: ``--device``, ``--out``, ``--set`` and ``--data-dir`` applied."""
    from hrm_core.config.schema import validate_config
    from hrm_core.paths import project_root
    from hrm_core.train.hardware import resolve_device

    recorded = original.context
    config, set_keys = apply_sets(recorded["config"], sets)
    if device:
        config["device"] = resolve_device(device).type
    cfg = validate_config(config)
    try:
        dev = resolve_device(cfg.device)
    except UserError:
        raise UserError(f"the run trained on device={cfg.device}, which this machine lacks: "
                        "pass --device cpu (reported as a difference)") from None
    if dev.type == "cuda" and cfg.device != "cuda":
        cfg = cfg.model_copy(update={"device": "cuda"})
    recorded_threads = (recorded.get("hardware") or {}).get("torch_threads")
    threads = int(cfg.threads if "threads" in set_keys or not recorded_threads else recorded_threads)

    data_path, data_note = ensure_dataset(cfg, recorded.get("dataset") or {}, data_dir, log)
    default_out = os.path.join(project_root(), "checkpoints", "reproduce", names.safe_name(original.run_id))
    run_dir = os.path.abspath(out or default_out)
    cfg = cfg.model_copy(update={"data_path": data_path, "checkpoint_path": run_dir, "resume_from": None,
                                 "init_from": None, "progress": False})
    return Plan(cfg, dev, threads, data_path, data_note, set_keys, run_dir)


def apply_sets(config: dict, sets: list[str]) -> tuple[dict, set[str]]:
    """``--set`` overrides on the recorded config dict, in the one override grammar
    (``hrm_core.config.overrides``: Hydra's values, lists, nested keys, quoting)."""
    from hrm_core.config.overrides import parse_overrides
    from hrm_core.config.schema import VALID_KEYS, flatten
    from hrm_core.errors import unknown_key_message

    sections = {k.rsplit(".", 1)[0] for k in VALID_KEYS if "." in k}
    config = copy.deepcopy(config)
    keys = set()
    for o in parse_overrides(sets, where="--set"):
        if o.delete:
            raise UserError(f"--set {o.text!r}: deleting a key is not supported; "
                            f"set it, e.g. --set {o.key}=null")
        if o.key not in VALID_KEYS:
            raise UserError(unknown_key_message(o.key, VALID_KEYS, where="--set"))
        if o.key in sections and not isinstance(o.value, dict):
            raise UserError(f"--set {o.text!r}: '{o.key}' is a section of the recorded config, not a config "
                            f"group to swap; set its keys (--set {o.key}.<key>=...) or a mapping")
        node = config
        *parents, leaf = o.key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        if isinstance(o.value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = {**node[leaf], **o.value}  # a mapping merges into a section, as in Hydra
            keys |= {f"{o.key}.{k}" for k in flatten(o.value)}
        else:
            node[leaf] = copy.deepcopy(o.value)
        keys.add(o.key)
    return config, keys


def _creatable(path: str) -> bool:
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return bool(parent) and os.access(parent, os.W_OK)


def ensure_dataset(cfg, dataset: dict, data_dir: str | None,
                   log: Callable[[str], None]) -> tuple[str, str | None]:
    """The dataset path to train on, rebuilt from the recorded recipe when missing.

    Returns (path, note): the note says where and how it was rebuilt (None when present)."""
    from hrm_core.data.resolve import default_data_dir, recipe_data_dir

    recorded = os.path.abspath(cfg.data_path or dataset.get("path") or recipe_data_dir(cfg.data))
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
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if recipe:
        how = _rebuild_from_recipe(recipe, name, target, log)
    else:
        how = _rebuild_from_build_info(dataset.get("build_info") or {}, recorded, name, target, log)
    return target, f"dataset missing at {recorded}: rebuilt into {target} from the recorded {how}"


def _rebuild_from_recipe(recipe: dict, name: str, target: str, log: Callable[[str], None]) -> str:
    from hrm_core.data.resolve import BUILDERS

    args = recipe.get("args", {})
    log(f"rebuilding dataset {name} from its recipe ({recipe['builder']}, {args}) into {target}")
    tmp = f"{target}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    BUILDERS[recipe["builder"]](tmp, **args)
    if os.path.exists(target):  # a partial folder without train/
        shutil.rmtree(target)
    os.replace(tmp, target)
    return f"{recipe['builder']} recipe"


def _rebuild_from_build_info(info: dict, recorded: str, name: str, target: str,
                             log: Callable[[str], None]) -> str:
    import importlib

    if not (info.get("builder") and info.get("argv")):
        raise UserError(f"dataset not found: {recorded}, and the run recorded no recipe to rebuild it "
                        "(no data.build, no build_info.json)")
    argv = list(info["argv"])
    if "--output-dir" in argv:
        argv[argv.index("--output-dir") + 1] = target
    else:
        argv = ["--output-dir", target, *argv]
    log(f"rebuilding dataset {name} with python -m {info['builder']} {' '.join(argv)}")
    code = importlib.import_module(info["builder"]).main(argv)
    if code:
        raise UserError(f"rebuilding {target} with {info['builder']} failed (exit {code})")
    return f"{info['builder']} build_info.json"
