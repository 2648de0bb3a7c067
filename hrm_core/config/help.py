"""``hrm-train --help``: the config groups with their options, and every key of the schema with
its type, default (as composed with the default groups) and range, and what it means.

Everything here is read from ``configs/`` and ``hrm_core/config/schema.py``; nothing is restated.
"""

from __future__ import annotations

import os
import textwrap
import types
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from hrm_core.config.compose import config_dir, group_options
from hrm_core.config.defaults import followed_key, submodel
from hrm_core.config.schema import CurriculumStage, TrainConfig

__all__ = ["help_text", "schema_keys", "KeyDoc"]

GROUPS = ("arch", "data", "loss", "curriculum")

USAGE = """\
Train one HRM.

usage: hrm-train [group=option ...] [key=value ...] [--cfg job] [-h]
       python -m hrm_core.pretrain ...                      (the same)
       torchrun --nproc_per_node=N -m hrm_core.pretrain ... (data parallel)

Overrides use Hydra's grammar: key=value, nested keys with dots (arch.hidden_size=64), lists
in brackets (eval_save_outputs=[logits]), null for none; ~key gives a key back its default.
  -h, --help   this text
  --cfg job    print the composed, validated config (YAML) and exit; nothing is trained

Examples:
  hrm-train arch=hrm_tiny data=sudoku4 global_batch_size=64 lr=1e-3 epochs=60 eval_interval=10
  hrm-train arch=hrm_v1_gated arch.gate_init_bias=-1.5 tracking.mlflow=true
  hrm-train arch=hrm_tiny data=sudoku4 --cfg job

A run folder (checkpoints/<project>/<run>/ unless checkpoint_path is set) holds the resolved
config.yaml, the overrides as typed (overrides.yaml), metrics.jsonl and the checkpoints."""


class KeyDoc(BaseModel):
    """One key of the schema as ``--help`` shows it."""

    key: str
    type: str
    range: str
    description: str
    follows: str | None = None


def _type_name(ann: Any) -> str:
    if ann is type(None):
        return "null"
    origin = get_origin(ann)
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(ann))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(ann))
    if origin is list:
        (item,) = get_args(ann) or (Any,)
        return f"list[{'stage' if item is CurriculumStage else _type_name(item)}]"
    if origin is dict:
        return "dict"
    return getattr(ann, "__name__", str(ann))


def _range(field) -> str:
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = []
    for meta in field.metadata:
        for attr, op in ops.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{op} {value:g}" if isinstance(value, float) else f"{op} {value}")
    return ", ".join(parts)


def schema_keys(model: type[BaseModel] = TrainConfig, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key of the schema, in the schema's order, top-level keys first."""
    leaves, sections = [], []
    for name, field in model.model_fields.items():
        sub = submodel(field.annotation)
        if sub is not None and get_origin(field.annotation) is not list:
            sections.append((sub, f"{prefix}{name}."))
            continue
        leaves.append(KeyDoc(key=prefix + name, type=_type_name(field.annotation), range=_range(field),
                             description=field.description or "", follows=followed_key(field)))
    for sub, sub_prefix in sections:
        leaves.extend(schema_keys(sub, sub_prefix))
    return leaves


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    dumped = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return dumped.strip().removesuffix("...").strip()


def _lookup(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _group_defaults() -> dict[str, str | None]:
    with open(os.path.join(config_dir(), "pretrain.yaml")) as f:
        entries = yaml.safe_load(f).get("defaults", [])
    return {k: v for e in entries if isinstance(e, dict) for k, v in e.items()}


def _summary(group: str, option: str, width: int = 78) -> str:
    """The first sentence of a preset's header comment: what it is."""
    comment = []
    with open(os.path.join(config_dir(), group, f"{option}.yaml")) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if not line.startswith("# @package"):
                comment.append(line.lstrip("#").strip())
    text, depth, end = " ".join(comment), 0, None
    for i, ch in enumerate(text):  # up to the first '.' or ':' outside brackets that ends a clause
        depth += (ch in "([{") - (ch in ")]}")
        if ch in ".:" and depth == 0 and text[i + 1:i + 2] in (" ", ""):
            end = i
            break
    sentence = text[:end]
    return sentence if len(sentence) <= width else sentence[: width - 3].rstrip() + "..."


def _groups_text() -> list[str]:
    chosen = _group_defaults()
    lines = ["Config groups (group=option; configs/<group>/<option>.yaml; * = the default):"]
    for group in GROUPS:
        default = chosen.get(group)
        lines.append(f"  {group}" + ("" if default else "  (default: none)"))
        for option in group_options(group):
            mark = "*" if option == default else " "
            lines.append(f"    {option:<18} {mark} {_summary(group, option)}".rstrip())
    return lines


def _keys_text() -> list[str]:
    from hrm_core.config.compose import compose_raw

    defaults = compose_raw([])
    lines = ["Keys (key: type = default, range; the default as composed with the default groups):"]
    for doc in schema_keys():
        default = _value(_lookup(defaults, doc.key))
        if doc.follows:
            default = f"{doc.follows} ({default})"
        head = f"  {doc.key}: {doc.type} = {default}" + (f", {doc.range}" if doc.range else "")
        lines.append(head)
        if doc.description:
            lines.extend(textwrap.wrap(doc.description, 100, initial_indent=" " * 6,
                                       subsequent_indent=" " * 6))
    return lines


def help_text() -> str:
    stage_fields = ", ".join(CurriculumStage.model_fields)
    return "\n".join([
        USAGE, "", *_groups_text(), "", *_keys_text(), "",
        f"A curriculum stage has: {stage_fields} (configs/curriculum/README.md).",
    ])
