"""The run's curriculum: its stages (one implicit stage without a curriculum), each with its
architecture overrides and its dataset (train, test and val splits, the dataset's evaluator), and
the sampler over the current stage's training split. Weights and optimizer state carry
over a stage switch; the trainer starts the ACT carry afresh."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from hrm_core import names
from hrm_core.config.schema import ArchConfig, TrainConfig
from hrm_core.data.evaluators import Evaluator, evaluator_for
from hrm_core.data.format import PuzzleSplit, load_metadata, open_split
from hrm_core.data.resolve import stage_data_paths
from hrm_core.data.sampler import TrainSampler
from hrm_core.errors import UserError
from hrm_core.model.hrm import ModelDims
from hrm_core.train.distributed import DistContext


@dataclass
class StageData:
    path: str
    train_split: PuzzleSplit
    eval_split: PuzzleSplit | None  # None: the dataset has no test split
    evaluator: Evaluator | None  # the dataset's own evaluation (ARC, on test), if any
    val_split: PuzzleSplit | None = None  # None: no validation split (built with val_size 0)

    def split(self, name: str) -> PuzzleSplit | None:
        """The split evaluations of ``name`` (``names.EVAL``: test, ``names.VAL``) read."""
        return self.val_split if name == names.VAL else self.eval_split

    @property
    def periodic(self) -> str:
        """The split evaluated at every eval step: val when the dataset has one, else test (eval)."""
        return names.VAL if self.val_split is not None else names.EVAL


def _open_like(path: str, split: str, train: PuzzleSplit) -> PuzzleSplit | None:
    """``split`` of the dataset at ``path`` (None when absent), checked to fit ``train``'s shapes."""
    if not os.path.isdir(os.path.join(path, split)):
        return None
    opened = open_split(path, split)
    tm, em = train.metadata, opened.metadata
    if (em.seq_len, em.vocab_size) != (tm.seq_len, tm.vocab_size):
        raise UserError(f"{path}: {split} split has seq_len/vocab {em.seq_len}/{em.vocab_size}, "
                        f"train has {tm.seq_len}/{tm.vocab_size}")
    return opened


def open_stage_data(path: str) -> StageData:
    train = open_split(path, "train")
    test = _open_like(path, "test", train)
    val = _open_like(path, names.VAL, train)
    return StageData(path, train, test, evaluator_for(path) if test is not None else None, val)


def stage_archs(base_arch: ArchConfig, stages: list) -> list[ArchConfig]:
    """The architecture each stage runs: the run's, with the stage's overrides."""
    return [base_arch.model_copy(update=s.arch_overrides) if s is not None else base_arch for s in stages]


class Curriculum:
    """The stages, the current one (``index``; -1 before the first ``enter``), its data and sampler."""

    def __init__(self, cfg: TrainConfig, data_path: str, ctx: DistContext, log: Callable[[str], None]):
        self.cfg, self.ctx, self.log = cfg, ctx, log
        self.stages = list(cfg.curriculum.stages or [None])
        self.paths = stage_data_paths(cfg, data_path, log=log) if cfg.curriculum.enabled else [data_path]
        self.archs = stage_archs(cfg.arch, self.stages)
        self.index = -1
        self.data = open_stage_data(self.paths[0])
        self.sampler: TrainSampler | None = None
        meta = self.data.train_split.metadata
        self.dims = ModelDims(meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers)
        self._check_shapes()

    def _check_shapes(self) -> None:
        """Stage datasets must fit one model: same vocab, seq_len and puzzle identifiers."""
        first = (self.dims.vocab_size, self.dims.seq_len, self.dims.num_puzzle_identifiers)
        for i, path in enumerate(self.paths[1:], start=1):
            m = load_metadata(path, "train")
            if (m.vocab_size, m.seq_len, m.num_puzzle_identifiers) != first:
                raise UserError(
                    f"curriculum.stages[{i}] dataset {path} has vocab/seq_len/puzzle ids "
                    f"{m.vocab_size}/{m.seq_len}/{m.num_puzzle_identifiers}, "
                    f"stage 0 has {'/'.join(map(str, first))}"
                )

    @property
    def arch(self) -> ArchConfig:
        return self.archs[self.index]

    def enter(self, index: int, step: int) -> bool:
        """Switch to stage ``index`` before optimizer step ``step + 1``; False if it is the current one."""
        if index == self.index:
            return False
        if self.index >= 0:  # stage 0's data was opened by the constructor
            self.data = open_stage_data(self.paths[index])
        cfg, ctx = self.cfg, self.ctx
        self.sampler = TrainSampler(self.data.train_split, cfg.global_batch_size, ctx.rank, ctx.world_size,
                                    seed=cfg.effective_data_seed)
        if self.index >= 0:
            stage = self.stages[index]
            self.log(f"curriculum stage {index} ({stage.name or index}) from step {step + 1}: "
                     f"{stage.arch_overrides} data={self.data.path}")
        self.index = index
        return True
