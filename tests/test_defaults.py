"""One source of defaults: the schema states each default once; Hydra composes it first, the
presets of configs/ carry only what differs, and neither they nor the README can drift from it."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from hrm_core.config.compose import compose_config, compose_raw, group_options
from hrm_core.config.defaults import followed_key, schema_defaults, submodel
from hrm_core.config.help import GROUPS
from hrm_core.config.schema import VALID_KEYS, ArchConfig, TrainConfig
from tests.conftest import PROJECT

CONFIGS = os.path.join(PROJECT, "configs")


def preset_files() -> list[tuple[str, str]]:
    """(path, the key prefix its content lands under) of the root config and every group preset."""
    out = [(os.path.join(CONFIGS, "pretrain.yaml"), "")]
    for group in GROUPS:
        for option in group_options(group):
            path = os.path.join(CONFIGS, group, f"{option}.yaml")
            with open(path) as f:
                glob = "# @package _global_" in f.read()
            out.append((path, "" if glob else f"{group}."))
    return out


def leaves(node: dict[str, Any], model=TrainConfig, prefix: str = "") -> dict[str, Any]:
    """Flatten a preset along the schema: into sub-configs, not into dict- or list-valued keys."""
    out = {}
    for key, value in node.items():
        field = model.model_fields.get(key)
        sub = submodel(field.annotation) if field is not None else None
        if isinstance(value, dict) and sub is not None:
            out.update(leaves(value, sub, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


ABSENT = object()  # under a sub-config whose default is null (data.build): nothing to restate


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if tree is None:
            return ABSENT
        tree = tree[part]
    return tree


def model_at(prefix: str):
    model = TrainConfig
    for part in filter(None, prefix.split(".")):
        model = submodel(model.model_fields[part].annotation)
    return model


def test_no_preset_restates_a_schema_default():
    defaults = schema_defaults()
    restated, unknown = [], []
    for path, prefix in preset_files():
        with open(path) as f:
            content = yaml.safe_load(f) or {}
        content.pop("defaults", None)
        for key, value in leaves(content, model_at(prefix), prefix).items():
            if key not in VALID_KEYS:
                unknown.append(f"{os.path.relpath(path, PROJECT)}: {key}")
            elif value == lookup(defaults, key):
                restated.append(f"{os.path.relpath(path, PROJECT)}: {key}: {value!r}")
    assert not unknown, f"keys the schema does not have: {unknown}"
    assert not restated, f"presets restating the schema's default (delete these lines): {restated}"


def test_the_composed_defaults_are_the_schemas_but_for_the_default_presets():
    composed = compose_config([]).model_dump()
    schema = TrainConfig().model_dump()
    assert composed.pop("data") != schema.pop("data")  # data=sudoku9_1k: its name and recipe
    assert composed == schema
    raw = compose_raw([])
    for key in ("low_precision_gemm", "eval_save_outputs", "alerts.eval_rel_drop", "tracking.experiment"):
        lookup(raw, key)  # every key of the schema is in the composed config, so it can be overridden


def test_a_deleted_key_gets_back_its_one_default():
    default = TrainConfig.model_fields["eval_interval"].default
    assert default == 10000  # the reference's; stated once, in the schema
    deleted = compose_config(["~eval_interval", "~alerts.grad_factor"])
    assert deleted.eval_interval == compose_config([]).eval_interval == default
    assert deleted.alerts.grad_factor == TrainConfig().alerts.grad_factor
    # a key that no YAML file listed was rejected ("did you mean 'low_precision_gemm'?")
    assert compose_config(["low_precision_gemm=fp32"]).low_precision_gemm == "fp32"


def test_a_default_that_follows_another_key():
    follows = {name: followed_key(f) for name, f in ArchConfig.model_fields.items() if followed_key(f)}
    assert follows == {"puzzle_emb_ndim": "hidden_size"}
    arch = ArchConfig()  # built in Python: its own default agrees with the key it follows
    assert arch.puzzle_emb_ndim == arch.hidden_size
    assert schema_defaults()["arch"]["puzzle_emb_ndim"] == "${.hidden_size}"
    assert compose_config(["arch=hrm_tiny"]).arch.puzzle_emb_ndim == 64
    assert compose_config(["arch.hidden_size=256"]).arch.puzzle_emb_ndim == 256


def _readme_section(title: str) -> str:
    with open(os.path.join(PROJECT, "README.md")) as f:
        text = f.read()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def _cell_value(cell: str) -> Any:
    value = yaml.safe_load(cell)
    try:
        return float(value) if isinstance(value, str) and re.fullmatch(r"[-+0-9.e]+", value) else value
    except ValueError:
        return value


def test_readme_tables_state_the_schemas_defaults():
    section = _readme_section("Training one model")
    composed = compose_config([]).model_dump()
    checked = 0
    for line in section.splitlines():
        if not line.startswith("| `"):  # a row of a key table
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        keys = re.findall(r"`([A-Za-z_][A-Za-z0-9_.]*)`", cells[0])
        values = cells[1].split(", ") if len(keys) > 1 else [cells[1]]
        values = values * len(keys) if len(values) == 1 else values  # one value for all of them
        assert len(values) == len(keys), line
        for key, cell in zip(keys, values, strict=True):
            if cell.startswith("="):  # a default that follows another key
                field = ArchConfig.model_fields[key.split(".")[-1]]
                assert followed_key(field) and followed_key(field).startswith(cell[1:].strip()), line
                continue
            assert _cell_value(cell) == lookup(composed, key), f"README says {key} = {cell}: {line}"
            checked += 1
    assert checked >= 30, checked
    for group in GROUPS:  # the Groups line names every preset
        for option in group_options(group):
            assert f"{option}|" in section or f"|{option}`" in section or f"={option}" in section, option

