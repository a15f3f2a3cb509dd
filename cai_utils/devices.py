"""What this machine offers the profiles: CUDA, native bf16 on the CPU, the dtype a profile's
models answer and judge in as a result, and which process of a multi-process launch this is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .profile_schema import Profile


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16, read from
    /proc/cpuinfo; False where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_cpu_bf16(profile: "Profile", device: str | None = None) -> bool:
    """True when a profile asks for ``cpu_bf16`` and runs on a CPU that has native bf16
    (``device``: ``"cpu"`` or ``"cuda"``; default: what torch sees)."""
    on_cpu = (device or ("cuda" if has_cuda() else "cpu")) == "cpu"
    return profile.cpu_bf16 and on_cpu and cpu_has_bf16()


def inference_dtype(profile: "Profile", device: str | None = None) -> str:
    """The dtype a profile's models answer and judge in: bfloat16 under ``cpu_bf16`` on a CPU
    with native bf16, else the profile's ``dtype``.

    >>> from cai_utils.profiles import PROFILES
    >>> inference_dtype(PROFILES["ci"])
    'float32'
    >>> inference_dtype(PROFILES["cpu"].replace(cpu_bf16=True), device="cuda")
    'float32'
    """
    return "bfloat16" if uses_cpu_bf16(profile, device) else profile.dtype


def has_cuda() -> bool:
    """True when torch sees a CUDA device (False when torch is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def processes() -> tuple[int, int]:
    """This process's rank and how many processes train together, as ``accelerate launch`` and
    ``torchrun`` set them in the environment (``RANK``, ``WORLD_SIZE``, and ``LOCAL_RANK``,
    without which a stray variable is ignored); ``(0, 1)`` in a plain run.

    >>> processes() if "LOCAL_RANK" not in os.environ else (0, 1)
    (0, 1)
    """
    if "LOCAL_RANK" not in os.environ:
        return 0, 1
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True in a plain run and in rank 0 of a launch: the one process that writes files."""
    return processes()[0] == 0
