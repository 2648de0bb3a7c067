"""The schema's defaults as Hydra's base config: the one place a default is stated.

Every default of the training config is stated once, in ``hrm_core/config/schema.py``.
``schema_defaults()`` turns the schema into the config that ``configs/pretrain.yaml`` lists
first in its defaults (``hrm_schema``); the YAML presets in ``configs/`` carry only what
differs from it. So every documented key can be overridden (and deleted with ``~key``, which
gives back the schema's default), and a preset cannot restate a default that later drifts.

A default that follows another key of the same section (``arch.puzzle_emb_ndim`` follows
``arch.hidden_size``) is declared in the schema with ``json_schema_extra={FOLLOWS: key}`` and
becomes a Hydra interpolation here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hrm_core.config.schema import FOLLOWS, TrainConfig

__all__ = ["SCHEMA_CONFIG", "schema_defaults", "register_schema", "submodel", "followed_key"]

SCHEMA_CONFIG = "hrm_schema"  # its name in Hydra's config store (configs/pretrain.yaml's defaults)


def submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``X`` or ``X | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def followed_key(field) -> str | None:
    extra = field.json_schema_extra
    return extra.get(FOLLOWS) if isinstance(extra, dict) else None


def _with_interpolations(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for name, field in model.model_fields.items():
        follows = followed_key(field)
        if follows is not None:
            out[name] = "${." + follows + "}"
        sub = submodel(field.annotation)
        if sub is not None and isinstance(out.get(name), dict):
            out[name] = _with_interpolations(sub, out[name])
    return out


def schema_defaults() -> dict[str, Any]:
    """Every key of ``TrainConfig`` with its default, as a plain (YAML-able) nested dict."""
    return _with_interpolations(TrainConfig, TrainConfig().model_dump(mode="json"))


def register_schema() -> None:
    """Put the schema's defaults in Hydra's config store as ``hrm_schema`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_CONFIG, node=schema_defaults())
