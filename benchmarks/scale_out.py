"""Beyond one GPU: estimated hours of `run` for bigger policies on 1-8 A100s (an estimate).

Each stage's single-GPU time comes from ``cai_utils.sizing.plan`` (the model's shape, the
profile's sizes, the A100's published peak and the efficiency factors in
``cai_utils.hardware``; the CPU's were fitted to this course's measured ``make demo``). Only the
training stages run under ``accelerate launch`` (DDP or ZeRO-3): they are divided over the GPUs
at ``SCALING`` of ideal per doubling. Generation, judging, evaluation and loading run in one
process and are not. Memory: the single-GPU training peak from the same plan, and whether it
fits 40 GB without ZeRO-3.

    python benchmarks/scale_out.py > benchmarks/results/scale_out.txt
"""

import math

from cai_utils.hardware import DEVICES, SHAPES
from cai_utils.profiles import get_profile
from cai_utils.sizing import plan

SCALING = 0.9  # share of ideal speed-up kept per doubling of GPUs (gradient all-reduce, stragglers)
GPUS = (1, 2, 4, 8)
MODELS = ("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct")


TRAINING = {"sft", "dpo", "reward", "ppo", "grpo"}  # the stages `train` runs under a launch


def hours(rows: list[dict], gpus: int) -> float:
    speedup = gpus * SCALING ** math.log2(gpus)
    return sum(r["seconds"] / speedup if r["stage"] in TRAINING else r["seconds"]
               for r in rows) / 3600


def main():
    device = DEVICES["a100"]
    base = get_profile("a100")
    print(f"Estimates, not measurements: profile a100's sizes on {device.name} "
          f"({device.tflops:.0f} TFLOPS bf16, {device.bandwidth_gbs:.0f} GB/s), "
          f"training stages only over the GPUs, {SCALING:.0%} of ideal speed-up kept per doubling; "
          "the other stages in one process.\n")
    print("| policy | parameters | " + " | ".join(f"{g} GPU{'s' * (g > 1)}, hours" for g in GPUS)
          + " | peak GB on one GPU: SFT/DPO | PPO (three copies) |")
    print("|---|---|" + "---|" * len(GPUS) + "---|---|")
    for model in MODELS:
        profile = base.replace(policy_model=model, judge_model=model)
        rows = plan(profile, device)
        peak = {r["stage"]: r["memory_gb"] for r in rows if "memory_gb" in r}
        fits = lambda gb: f"{gb:.0f}" + ("" if gb <= device.memory_gb else " (over 40: ZeRO-3 or 80 GB)")  # noqa: E731
        print(f"| {model} | {SHAPES[model].params / 1e9:.1f}B | "
              + " | ".join(f"{hours(rows, g):.1f}" for g in GPUS)
              + f" | {fits(max(peak['sft'], peak['dpo']))} | {fits(peak['ppo'])} |")


if __name__ == "__main__":
    main()
