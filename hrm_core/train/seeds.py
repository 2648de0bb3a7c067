"""The run's random streams: model init, data order and ACT exploration are seeded apart,
each from the run's seed (the data sampler seeds itself from ``data_seed``)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["explore_generator", "stream_seed"]

STREAMS = {"init": 0, "data": 1, "explore": 2}


def stream_seed(seed: int, stream: str, rank: int = 0) -> int:
    """Independent, reproducible seeds per random stream (init, data, exploration) and rank."""
    return int(np.random.SeedSequence([seed, STREAMS[stream], rank]).generate_state(1)[0])


def explore_generator(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of ACT exploration (and of any random draw a variant makes) on ``rank``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(stream_seed(seed, "explore", rank))
    return generator
