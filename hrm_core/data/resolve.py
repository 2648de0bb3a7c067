"""Where a run's data comes from: an explicit ``data_path``, or a built-in dataset that a
config's build recipe makes on first use (generators only; nothing is downloaded)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable

from hrm_core import names
from hrm_core.config.schema import TrainConfig
from hrm_core.errors import UserError
from hrm_core.paths import project_root

__all__ = [
    "BUILDERS",
    "data_config",
    "stage_data_paths",
    "default_data_dir",
    "recipe_data_dir",
    "require_val_split",
    "resolve_data_path",
]


def _build_sudoku(output_dir: str, **args) -> str:
    from hrm_core.data.build_sudoku import build_sudoku_dataset

    return build_sudoku_dataset(output_dir, **args)


def _build_arc(output_dir: str, **args) -> str:
    from hrm_core.data.build_arc import build_arc_dataset

    return build_arc_dataset(output_dir, **args)


def _build_maze(output_dir: str, **args) -> str:
    from hrm_core.data.build_maze import build_maze_dataset

    return build_maze_dataset(output_dir, **args)


BUILDERS: dict[str, Callable[..., str]] = {"sudoku": _build_sudoku, "arc": _build_arc, "maze": _build_maze}


def data_config(name: str):
    """A data config from configs/data/<name>.yaml (for curriculum stages)."""
    import yaml

    from hrm_core.config.schema import DataConfig

    path = os.path.join(project_root(), "configs", "data", f"{name}.yaml")
    if not os.path.exists(path):
        options = sorted(f[:-5] for f in os.listdir(os.path.dirname(path)) if f.endswith(".yaml"))
        raise UserError(
            f"unknown data config '{name}' in a curriculum stage; choose one of: {', '.join(options)}"
        )
    with open(path) as f:
        return DataConfig.model_validate(yaml.safe_load(f))


def stage_data_paths(cfg: TrainConfig, default_path: str, log: Callable[[str], None] = print) -> list[str]:
    """The dataset of each curriculum stage (built when missing); the run's own by default."""
    paths = []
    for stage in cfg.curriculum.stages or []:
        if stage.data_path:
            paths.append(resolve_data_path(cfg.model_copy(update={"data_path": stage.data_path}), log=log))
        elif stage.data:
            stage_cfg = cfg.model_copy(update={"data_path": None, "data": data_config(stage.data)})
            paths.append(resolve_data_path(stage_cfg, log=log))
        else:
            paths.append(default_path)
    return paths


def default_data_dir(name: str, val_size: int = 0) -> str:
    """``data/<name>``; a recipe with a validation split builds into ``data/<name>-val<N>``, so a
    dataset with and one without a val split never share a directory."""
    return os.path.join(project_root(), "data", f"{name}-val{val_size}" if val_size else name)


def recipe_data_dir(data) -> str:
    """The default directory of a data config (a ``DataConfig``): by name and its recipe's val size."""
    val_size = int((data.build.args if data.build is not None else {}).get(names.VAL_SIZE_KEY) or 0)
    return default_data_dir(data.name, val_size)


def resolve_data_path(cfg: TrainConfig, build: bool = True, log: Callable[[str], None] = print) -> str:
    """Absolute dataset path; builds a built-in dataset when it is missing and has a recipe."""
    path = cfg.data_path or recipe_data_dir(cfg.data)
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(os.path.join(path, "train")):
        return path
    recipe = cfg.data.build
    if cfg.data_path or recipe is None:  # an explicit path is the user's data: never build into it
        raise UserError(
            f"dataset not found: {path} (no train/ split; build one, e.g. python -m "
            f"hrm_core.data.build_sudoku --output-dir {path})"
        )
    if not build:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Concurrent trials or ranks may ask for the same dataset: one builds, the others wait.
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(os.path.join(path, "train")):
            log(f"building dataset '{cfg.data.name}' into {path} ({recipe.builder}, {recipe.args})")
            tmp = f"{path}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            BUILDERS[recipe.builder](tmp, **recipe.args)
            if os.path.exists(path):  # a partial folder without train/: replace it
                shutil.rmtree(path)
            os.replace(tmp, path)
    return path


def require_val_split(cfg: TrainConfig, path: str | None = None) -> None:
    """Raise a one-line UserError unless ``cfg``'s dataset has a validation split: a search selects
    on val/*, and the test split is read only by the final evaluation and by confirmation.
    Without ``path``, the recipe is checked (before any build); with it, the directory."""
    if path is not None:
        if os.path.isdir(os.path.join(path, names.VAL)):
            return
        where = f"dataset {path} has no val/ split"
    elif cfg.data_path is not None or cfg.data.build is None:
        return  # the user's own directory: checked once resolved
    elif int(cfg.data.build.args.get(names.VAL_SIZE_KEY) or 0) > 0:
        return
    else:
        where = f"data config '{cfg.data.name}' builds no val split"
    raise UserError(f"{where}, so it cannot be searched: set data.build.args.val_size (or build with the "
                    f"builder's --val-size N) to carve a validation split from the training puzzles")
