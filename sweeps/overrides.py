"""A sweep's command-line layer: the overrides after ``python -m sweeps run|validate NAME``.

Parsed with the one override grammar (``hrm_core.config.overrides``, Hydra's), then routed
by key, and applied *last*, over the scale preset, the sweep file and its ``scales.<s>`` block:

* a sweep-file key sets the sweep: ``seeds=[5,6]``, ``num_samples=3``, ``resources.cpu=2``,
  ``scheduler.grace_period=8``, ``arms.b=["lr=0.003"]``, ``~arms.b`` (drop an arm). A searched
  key keeps its dots: ``space.arch.gate_init_bias.low=-2`` sets one field of the searched key
  ``arch.gate_init_bias``; ``space.arch.gate_init_bias={type:uniform,low:-2,high:0}`` replaces it;
* a training key is a training override for every trial: ``max_steps=800``,
  ``arch.hidden_size=128``, ``arch=hrm_v1_gated``, ``~eval_interval`` join ``base`` after every
  other layer's, so they win; ``base=["max_steps=800"]`` says the same explicitly.

Nothing typed is silently lost: ``scale=`` and ``scales.*`` are refused (``--scale`` chooses the
scale, and the command line already wins over the block), ``seed=`` is refused (each trial's seed
comes from ``seeds``), and so is a training override that an arm or the search space sets
itself (it would win over ``base``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hrm_core import names
from hrm_core.config.overrides import Override, parse_overrides
from hrm_core.config.schema import VALID_KEYS
from hrm_core.errors import UserError, unknown_key_message

PARAM_FIELDS = ("type", "values", "low", "high")  # the fields of one searched key (spec.Param)
_HAS_CHILDREN = {k.rsplit(".", 1)[0] for k in VALID_KEYS if "." in k}


def is_training_key(key: str) -> bool:
    """A key of the training config, or a key inside one of its free-form mappings
    (``data.build.args.n``)."""
    if key in VALID_KEYS:
        return True
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in VALID_KEYS:
            return prefix not in _HAS_CHILDREN
    return False


@dataclass
class CommandLine:
    """The parsed overrides of one invocation, in the order typed."""

    overrides: list[Override] = field(default_factory=list)
    training: list[Override] = field(default_factory=list)  # those that join base

    @property
    def texts(self) -> list[str]:
        return [o.text for o in self.overrides]

    def source_of(self, top: str) -> str | None:
        """The last override that set the top-level sweep key ``top`` (for error messages)."""
        found = [o.text for o in self.overrides if o not in self.training and o.key.split(".")[0] == top]
        return found[-1] if found else None

    def apply(self, raw: Mapping) -> dict:
        """``raw`` (the sweep after its scale layers) with the command line on top."""
        out = copy.deepcopy(dict(raw))
        for o in self.overrides:
            if o in self.training:
                out["base"] = [*(out.get("base") or []), o.text]
            elif o.key == "base" and not o.delete:
                if not isinstance(o.value, list) or not all(isinstance(v, str) for v in o.value):
                    raise UserError(f"override '{o.text}': base takes a list of training overrides, "
                                    "e.g. base=[\"max_steps=800\"] (or just max_steps=800)")
                out["base"] = [*(out.get("base") or []), *o.value]
            else:
                _apply_one(out, _path(o, out), o)
        return out


def parse_command_line(texts: Iterable[str], sweep_keys: Iterable[str]) -> CommandLine:
    """Parse and route the overrides; a malformed or unknown one is one line, before anything starts."""
    sweep_keys = set(sweep_keys)
    cmd = CommandLine()
    for o in parse_overrides(texts, where="sweep override"):
        top = o.key.split(".")[0]
        if top == "scale":
            raise UserError(f"override '{o.text}': choose the scale with --scale (make: SCALE=...)")
        if top == "scales":
            raise UserError(f"override '{o.text}': the command line already wins over the file's scales "
                            "block; set the key itself (e.g. seeds=[0])")
        if top not in sweep_keys:
            if o.key == "seed":
                raise UserError(f"override '{o.text}': each trial's seed comes from the sweep's seeds; "
                                f"write seeds=[{o.value}]")
            if not is_training_key(o.key):
                known = sorted(sweep_keys) + [k for k in VALID_KEYS if k != "seed"]
                raise UserError(f"override '{o.text}': "
                                + unknown_key_message(o.key, known, where="sweep or training"))
            cmd.training.append(o)
        cmd.overrides.append(o)
    return cmd


def _path(o: Override, raw: Mapping) -> list[str]:
    """Where ``o`` lands in the sweep. Arm names and searched keys may contain dots:
    ``arms.<name>`` and ``space.<key>[.<field>]`` keep them whole."""
    parts = o.key.split(".")
    if parts[0] == "arms" and len(parts) > 1:
        return ["arms", ".".join(parts[1:])]
    if parts[0] == "space" and len(parts) > 1:
        rest = parts[1:]
        space = raw.get("space") if isinstance(raw.get("space"), dict) else {}
        field_of = ".".join(rest[:-1])
        if len(rest) > 1 and rest[-1] in PARAM_FIELDS and not isinstance(o.value, dict) and (
            not o.delete or field_of in space
        ):
            return ["space", field_of, rest[-1]]
        return ["space", ".".join(rest)]
    return parts


def _apply_one(out: dict, path: list[str], o: Override) -> None:
    node = out
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None and not o.delete:
            child = node[part] = {}
        if child is None:
            raise UserError(f"override '{o.text}': the sweep has no '{'.'.join(path)}' to delete")
        if not isinstance(child, dict):
            raise UserError(f"override '{o.text}': '{'.'.join(path[: i + 1])}' is not a mapping in the sweep")
        node = child
    last = path[-1]
    if o.delete:
        if last not in node:
            raise UserError(f"override '{o.text}': the sweep has no '{'.'.join(path)}' to delete")
        del node[last]
    elif isinstance(o.value, dict) and isinstance(node.get(last), dict) and path[0] != "space":
        node[last] = _merged(node[last], o.value)  # Hydra's: a mapping merges into a mapping
    else:  # a searched key's mapping replaces its definition: choice and uniform share no field
        node[last] = copy.deepcopy(o.value)


def _merged(low: dict, high: Mapping) -> dict:
    out = dict(low)
    for k, v in high.items():
        out[k] = _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def check_not_shadowed(cmd: CommandLine, arms: Mapping[str, list[str]], space: Iterable[str],
                       path: str) -> None:
    """Refuse a command-line training override that an arm or the search space sets itself:
    theirs would win over ``base``, and what the user typed would not run."""
    if not cmd.training:
        return
    searched = set(space)
    arm_keys = {arm: {p.key for p in parse_overrides(ovs, where=f"{path}: arms.{arm}")}
                for arm, ovs in arms.items()}
    for o in cmd.training:
        if o.key in searched:
            raise UserError(f"{path}: override '{o.text}': the search space sets {o.key} in every trial; "
                            f"change its range instead (e.g. space.{o.key}.low=...)")
        for arm, keys in arm_keys.items():
            if o.key in keys:
                raise UserError(f"{path}: override '{o.text}': arm '{arm}' sets {o.key} itself, and an "
                                f"arm's overrides win over base; change the arm instead (arms.{arm}=[...])")


def refuse_new_overrides(overrides: Iterable[str] | None, command: str) -> None:
    """``resume`` and ``--extend`` run what the invocation ran: they re-apply its recorded
    overrides and take none of their own."""
    given = list(overrides or [])
    if given:
        raise UserError(f"{command} takes no overrides (got {' '.join(given)}): it re-applies the ones the "
                        f"invocation ran with (tag {names.TAG_SWEEP_OVERRIDES}); edit the sweep file to add "
                        "seeds or arms, or start a new run")


def record(texts: list[str]) -> str:
    """The overrides as the parent run's tag value."""
    return json.dumps(list(texts))


def recorded(tags: Mapping[str, str], drop: Iterable[str] = ()) -> list[str]:
    """The overrides an invocation ran with (its parent run's tags), without the keys in ``drop``."""
    texts = json.loads(tags.get(names.TAG_SWEEP_OVERRIDES) or "[]")
    dropped = set(drop)
    return [o.text for o in parse_overrides(texts, where="recorded override") if o.key not in dropped]
