"""Compose a training config from ``configs/`` with Hydra and validate it.

Hydra's messages for bad overrides are multi-line; here each becomes one line that
names the key and suggests the closest valid one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from hrm_core.config.schema import VALID_KEYS, TrainConfig, validate_config
from hrm_core.errors import ConfigError, unknown_key_message
from hrm_core.paths import project_root

__all__ = [
    "config_dir",
    "group_options",
    "compose_raw",
    "compose_config",
    "to_yaml",
]


def config_dir() -> str:
    return os.path.join(project_root(), "configs")


def group_options(group: str) -> list[str]:
    folder = os.path.join(config_dir(), group)
    if not os.path.isdir(folder):
        return []
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def _one_line(err: Exception, overrides: Sequence[str]) -> str:
    text = str(err)
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if m:
        key = m.group(1)
        return unknown_key_message(key, VALID_KEYS, where="override")
    m = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        return f"unknown {group} config '{option}'; choose one of: {', '.join(group_options(group))}"
    m = re.search(r"Error parsing override '([^']+)'", text)
    if m:
        return f"cannot parse override '{m.group(1)}' (expected key=value)"
    first = " ".join(text.split())
    return f"invalid overrides {list(overrides)}: {first[:300]}"


def _schema_keys_added(overrides: Sequence[str]) -> list[str]:
    """A key the schema knows but a YAML file leaves out is added (``++key=value``), so
    every documented key can be overridden whatever config file is selected. Parsed with
    the one override grammar (``hrm_core.config.overrides``): a malformed one is one line."""
    from hrm_core.config.overrides import parse_overrides

    return [
        f"++{o.text}" if o.kind == "set" and o.key in VALID_KEYS and "." in o.key else o.text
        for o in parse_overrides(overrides)
    ]


def compose_raw(overrides: Sequence[str], config_name: str = "pretrain") -> dict[str, Any]:
    """Hydra-compose ``configs/<config_name>.yaml`` with overrides, resolved, as a dict."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from hrm_core.config.defaults import register_schema

    hydra_overrides = _schema_keys_added(overrides)  # before Hydra: a malformed override is one line
    register_schema()  # the schema's defaults: the first entry of configs/pretrain.yaml's defaults
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base=None):
            cfg = compose(config_name=config_name, overrides=hydra_overrides)
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception as err:  # noqa: BLE001 - Hydra/OmegaConf raise many types; all are bad input
        raise ConfigError(_one_line(err, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def compose_config(overrides: Sequence[str] = ()) -> TrainConfig:
    return validate_config(compose_raw(overrides))


def to_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(), sort_keys=False)
