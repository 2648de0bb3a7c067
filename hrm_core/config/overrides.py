"""The one command-line override grammar: Hydra's override parser, for every command.

``python -m hrm_core.pretrain``, ``python -m sweeps run|validate|resume`` and
``python -m sweeps reproduce --set`` all read their overrides here, so quoting, lists and
nested keys are the same everywhere:

    key=value            max_steps=800  lr=1e-3  eval_interval=null  progress=false
    nested keys          arch.hidden_size=128
    lists and mappings   seeds=[5,6]  space.lr={type:loguniform,low:1e-4,high:1e-2}
    quoted strings       run_name='gated run'  base=["max_steps=800"]
    add / delete         +key=value  ++key=value  ~key

A comma list (``seeds=0,1``), ``range(...)``, ``glob(...)`` and ``choice(...)`` are Hydra
*multirun sweeps*, which no command here runs: they are refused in one line that shows the
list form, before anything starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from hrm_core.errors import ConfigError

__all__ = ["Override", "parse_override", "parse_overrides"]

Kind = Literal["set", "add", "force_add", "delete"]


@dataclass(frozen=True)
class Override:
    """One parsed override: the text as typed, its key, its Python value, what it does."""

    text: str
    key: str
    value: Any  # int, float, bool, None, str, list or dict (None for a bare ``~key``)
    kind: Kind = "set"

    @property
    def delete(self) -> bool:
        return self.kind == "delete"


def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _sweep_hint(text: str, key: str, parsed) -> str:
    from hydra.core.override_parser.types import ChoiceSweep

    if isinstance(parsed.value(), ChoiceSweep) and parsed.value().simple_form:
        items = ",".join(str(v) for v in parsed.value().list)
        return f"give one value, or for a list write {key}=[{items}]"
    return "give one value, or a list [a,b]"


def parse_override(text: str, where: str = "override") -> Override:
    """Parse one ``key=value``; every fault is a one-line ``ConfigError`` naming the override."""
    from hydra.core.override_parser.types import OverrideType

    text = str(text)
    try:
        parsed = _parser().parse_override(text)
    except Exception as err:  # noqa: BLE001 - Hydra's parse errors are several types, all bad input
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"cannot parse {where} '{text}': {first} (expected key=value; lists as [a,b], "
                          "strings with spaces or '=' quoted)") from None
    key = parsed.key_or_group
    if parsed.package is not None:
        raise ConfigError(f"{where} '{text}': '@package' overrides are not supported; write {key}=...")
    if parsed.is_sweep_override():
        raise ConfigError(f"{where} '{text}': a comma list, range(), glob() or choice() is a Hydra multirun "
                          f"sweep, which this command does not run; {_sweep_hint(text, key, parsed)}")
    kind: Kind = {
        OverrideType.CHANGE: "set", OverrideType.ADD: "add", OverrideType.FORCE_ADD: "force_add",
        OverrideType.DEL: "delete",
    }[parsed.type]
    value = None if kind == "delete" and parsed.value() is None else parsed.value()
    return Override(text, key, value, kind)


def parse_overrides(texts: Iterable[str], where: str = "override") -> list[Override]:
    return [parse_override(t, where) for t in texts]
