"""The training CLI's flags besides the overrides, as Hydra names them (``--help``, ``--cfg job``),
and the run folder's record of the overrides as the user typed them (``overrides.yaml``, a
YAML list of strings, as Hydra keeps it in ``.hydra/overrides.yaml``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from hrm_core.errors import UserError

__all__ = ["CliArgs", "parse_cli", "write_overrides", "read_overrides", "OVERRIDES_FILE"]

OVERRIDES_FILE = "overrides.yaml"
_CFG_FLAGS = ("--cfg", "-c")
_CFG_KINDS = ("job", "all")  # without a Hydra runtime, both are the job's config


@dataclass(frozen=True)
class CliArgs:
    overrides: list[str] = field(default_factory=list)
    help: bool = False
    show_cfg: bool = False  # --cfg job: print the composed config and exit


def parse_cli(argv: Sequence[str]) -> CliArgs:
    """Split ``argv`` into the flags and the overrides (everything else, in order)."""
    overrides: list[str] = []
    help_, show_cfg = False, False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            help_ = True
        elif arg == "--resolve":  # Hydra's: the printed config is always resolved here
            continue
        elif arg in _CFG_FLAGS or arg.startswith("--cfg="):
            kind = arg.split("=", 1)[1] if "=" in arg else (args.pop(0) if args else "")
            if kind not in _CFG_KINDS:
                raise UserError(f"--cfg takes {' or '.join(_CFG_KINDS)} (got {kind or 'nothing'}): "
                                "--cfg job prints the composed config")
            show_cfg = True
        else:
            overrides.append(arg)
    return CliArgs(overrides, help_, show_cfg)


def write_overrides(run_dir: str, overrides: Sequence[str]) -> str:
    """``<run_dir>/overrides.yaml``: the overrides as typed, beside the resolved config.yaml."""
    import yaml

    path = os.path.join(run_dir, OVERRIDES_FILE)
    with open(path, "w") as f:
        yaml.safe_dump([str(o) for o in overrides], f, default_flow_style=False)
    return path


def read_overrides(run_dir: str) -> list[str] | None:
    """The overrides a run was started with, or None when its folder has no record of them."""
    import yaml

    path = os.path.join(run_dir, OVERRIDES_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [str(o) for o in (yaml.safe_load(f) or [])]
