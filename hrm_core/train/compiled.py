"""torch.compile for runs that share a process or a machine: compiled once, never silently eager.

A sweep's trials run one after another in reused worker processes (``reuse_actors``), and every
process on a machine shares torch's on-disk compile caches (the FX graph and AOTAutograd caches,
under ``TORCHINDUCTOR_CACHE_DIR``, by default ``/tmp/torchinductor_$USER``). So the compile is
paid once per sweep worker at most, and on a machine that has compiled the model before, not
even that: a later trial of the same shapes reuses the process's compiled code, and a new
process loads the kernels from disk.

Two rules keep that exact:

- ``dynamic=False`` everywhere (see ``HRM.compile_inner`` and the optimizer): a new shape makes a
  new static graph, the same one a fresh process would build, never a shape-generic one whose
  kernels (and rounding) differ. So a trial's metrics are bitwise those of the same config run
  alone, whatever ran before it in its process.
- A process that runs many configs (one per arm or sample) needs more cached graphs than
  dynamo's default of 8 per function; past its limit dynamo falls back to eager without a
  word, which would change a trial's numerics. The limit is raised, and reaching it is an error.
"""

from __future__ import annotations

import os
import shutil

from hrm_core.errors import UserError

__all__ = ["GRAPHS_PER_FUNCTION", "check_compiler", "prepare_compile"]

# A config compiles about four graphs of the inner model (train forward, the Q target's no-grad
# forward, evaluation, a short last eval batch); 64 leaves room for 16 configs per process.
GRAPHS_PER_FUNCTION = 64


def check_compiler(device_type: str) -> None:
    """torch.compile on a CPU writes C++ kernels: without a C++ compiler it would fail at the
    first step, so say so first, in one line. (On CUDA the kernels are Triton's, whose own
    requirements are not checked here.)"""
    if device_type == "cuda":
        return
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    if not any(shutil.which(name) for name in names):
        raise UserError(f"compile=true: torch.compile on a CPU needs a C++ compiler ({' or '.join(names)} "
                        "not found on PATH); install one (e.g. apt-get install g++) or set compile=false")


def prepare_compile(device_type: str = "cpu") -> None:
    """Set dynamo and inductor for runs that share a process; idempotent (called per run)."""
    check_compiler(device_type)
    import torch._dynamo.config as dynamo
    import torch._functorch.config as functorch
    import torch._inductor.config as inductor

    dynamo.recompile_limit = max(dynamo.recompile_limit, GRAPHS_PER_FUNCTION)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4 * GRAPHS_PER_FUNCTION)
    dynamo.fail_on_recompile_limit_hit = True
    inductor.fx_graph_cache = True
    functorch.enable_autograd_cache = True
