"""What the machine offers, and the fast path picked for it (logged at start-up)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

import torch

from hrm_core.errors import UserError

__all__ = ["cpu_flags", "cpu_has_native_bf16", "describe", "resolve_device", "resolve_forward_dtype",
           "resolve_low_precision_gemm", "versions"]


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (else they are emulated, and slow)."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags) or platform.machine() == "arm64" and "bf16" in flags


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is available; use device=cpu (or device=auto)")
    return torch.device(requested)


def resolve_forward_dtype(requested: str, device: torch.device) -> str:
    """``auto``: bf16 where the hardware runs it natively (CUDA with bf16, AVX512-BF16/AMX
    CPUs), fp32 elsewhere (an AVX2-only CPU emulates bf16 matmuls ~17x slower)."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def resolve_low_precision_gemm(requested: str, device: torch.device) -> str:
    """``auto``: fp32 GEMMs on bf16-rounded operands on CPUs without native bf16."""
    if requested != "auto":
        return requested
    return "fp32" if device.type == "cpu" and not cpu_has_native_bf16() else "native"


def describe(device: torch.device, forward_dtype: str, low_precision_gemm: str = "native") -> str:
    """One line for the run log: device, kernels, dtype path."""
    if device.type == "cuda":
        hw = f"cuda:{torch.cuda.get_device_name(device)}"
    else:
        hw = f"cpu:{torch.backends.cpu.get_cpu_capability()}{'+bf16' if cpu_has_native_bf16() else ''}"
    path = forward_dtype
    if forward_dtype != "float32":
        path += " (fp32 GEMMs on rounded operands)" if low_precision_gemm == "fp32" else " (native kernels)"
        if low_precision_gemm == "native" and device.type == "cpu" and not cpu_has_native_bf16():
            path += " [warning: this CPU has no native bf16: low_precision_gemm=fp32 is ~20x faster]"
    return f"device={hw} threads={torch.get_num_threads()} forward_dtype={path}"


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    out["cpu_count"] = str(os.cpu_count())
    return out
