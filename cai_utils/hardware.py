"""The figures the estimates in ``sizing`` start from: model shapes (from each model's
config.json) and devices' published peaks with the share of them each kind of work reaches (the
CPU's fitted to a ``make demo`` by ``benchmarks/sizing.py``; the GPUs' assumed, see the README).
"""

from __future__ import annotations

from dataclasses import dataclass

from .profiles import Profile


@dataclass(frozen=True)
class Shape:
    """A model's size, from its config.json."""

    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key/value heads x head size
    vocab: int
    tied: bool  # input and output embeddings shared

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def block_params(self) -> int:
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim
        return self.layers * (attention + 3 * self.hidden * self.intermediate)

    @property
    def params(self) -> int:
        return self.embedding_params + self.block_params


SHAPES = {
    "default": Shape(30, 576, 1536, 192, 49152, True),  # SmolLM2-135M-Instruct (134.5M)
    "Qwen/Qwen2.5-0.5B-Instruct": Shape(24, 896, 4864, 128, 151936, True),
    "Qwen/Qwen2.5-1.5B-Instruct": Shape(28, 1536, 8960, 256, 151936, True),
    "Qwen/Qwen2.5-7B-Instruct": Shape(28, 3584, 18944, 512, 152064, False),
}


@dataclass(frozen=True)
class Device:
    """Peak figures and the share of them each kind of work reaches."""

    name: str
    tflops: float  # dense peak in the compute dtype (fp16 on a T4, bf16 on an A100)
    bandwidth_gbs: float
    memory_gb: float  # what a run can use
    train_efficiency: float
    prefill_efficiency: float
    decode_efficiency: float
    step_seconds: float  # the least a decoding step takes (kernel launches, 4-bit unpacking)
    load_seconds: float  # loading (and under 4-bit, quantising) the policy once


DEVICES = {
    # NVIDIA's T4 datasheet: 65 TFLOPS fp16 tensor, 320 GB/s, 16 GB (about 15 usable in Colab).
    # QLoRA reaches a small share of it (4-bit weights are unpacked before every matmul)
    # (assumed: a 10% share in training, a decoding step of at least 50 ms under bitsandbytes)
    "t4": Device("NVIDIA T4 (Colab)", 65.0, 320.0, 15.0, 0.10, 0.25, 0.25, 0.05, 30.0),
    # A100 40 GB: 312 TFLOPS bf16 tensor, 1,555 GB/s
    "a100": Device("NVIDIA A100 40GB", 312.0, 1555.0, 40.0, 0.35, 0.45, 0.30, 0.025, 60.0),
    # This course's 2-core CPU with bf16 autocast: the peak is 4x its measured fp32 matmul rate
    # (140 GFLOP/s; bf16 ran ~4x) and the efficiencies are fitted to a make demo
    # (benchmarks/sizing.py); reading prompts in big batches comes closest to the peak
    "cpu": Device("2 CPU cores (bf16)", 0.56, 20.0, 24.0, 0.26, 0.60, 0.14, 0.0, 3.0),
}


def device_for(profile: Profile) -> Device:
    """The device a profile is written for: its name's prefix (``t4-quick`` -> the T4), else
    this course's CPU (``ci``, ``cpu`` and the ``-cpu`` stand-ins).

    >>> device_for(Profile(name="t4-quick", description="", hardware="", memory="")).name
    'NVIDIA T4 (Colab)'
    """
    if profile.name.endswith("-cpu"):
        return DEVICES["cpu"]
    return next((d for key, d in DEVICES.items() if profile.name.startswith(key)), DEVICES["cpu"])


def shape_for(model: str) -> Shape:
    """The shape of a model the profiles name; a one-line error for any other."""
    if model not in SHAPES:
        raise ValueError(f"no size on record for {model!r}: add its config.json figures to hardware.SHAPES")
    return SHAPES[model]
