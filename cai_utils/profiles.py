"""Every size and model id per machine, in one place.

A profile is chosen with the ``CAI_PROFILE`` environment variable (``ci``, ``cpu``, ``t4-quick``,
``t4``, ``a100``); without it, ``t4-quick`` on a CUDA machine and ``cpu`` otherwise. Notebooks and the CLI
read their sizes from here only. What each setting means: ``profile_schema``.
"""

from __future__ import annotations

import os

from .devices import has_cuda
from .profile_schema import DEFAULT_MODEL, DPO, GRPO, PPO, SFT, Profile, Reward  # noqa: F401 (the profiles' API)

_GPU_TARGETS = "all-linear"

PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        description="Tests and nbval: every stage runs for real in seconds",
        hardware="any CPU",
        memory="~2 GB RAM",
        critic="course",
        self_critique_prompts=2,
        n_red_team=4,
        n_helpful=2,
        n_borderline=2,
        rounds=1,
        batch_size=8,
        max_new_tokens=32,
        critique_max_new_tokens=24,
        few_shot=1,
        label_source="rule",
        calibration_pairs=12,
        inverse_pairs=2,
        max_length=256,
        eval_prompts=4,
        eval_max_new_tokens=32,
        lm_eval_limit=10,
    ),
    "cpu": Profile(
        name="cpu",
        description="The demo on the offline default model, on 2 CPU cores",
        hardware="2 CPU cores, no GPU",
        memory="~4 GB RAM",
        # stage 1 from the course-written stronger critic on every training prompt (340 red-team,
        # 81 helpful, 151 borderline); the policy critiques itself on a few, for the gate report
        critic="course",
        cpu_bf16=True,  # answer, judge and train (autocast) in bf16 where the CPU has it natively
        self_critique_prompts=4,
        n_red_team=None,
        n_helpful=None,
        n_borderline=None,
        rounds=1,
        batch_size=32,  # generation and judging; training uses per_device_batch_size
        max_new_tokens=96,
        critique_max_new_tokens=64,
        round_temperatures=(0.0, 0.0),
        few_shot=3,  # measured best of five formats here: benchmarks/results/revision_formats.txt
        # chosen on the validation prompts (benchmarks/results/cpu_training_sweep.jsonl): the most
        # red-team refusals among settings that refuse at most 15% of borderline and of helpful
        # ones. SFT at a constant rate makes the model refuse (too much: 78% / 50% / 23% of
        # red-team / borderline / helpful validation prompts, with the 340 red-team training
        # prompts); DPO on benign-heavy pairs then takes the over-refusal back faster than the
        # refusals (60% / 11% / 7%)
        label_source="rule",  # the 135M judge prefers a refusal even on benign pairs (README, stage 2)
        # 72 pairs: 54 answer-over-needless-refusal, 18 refusal-over-compliance (validation: 64% /
        # 13% / 10% after 0.8 SFT epochs, against 62% / 14% / 10% for 144 pairs after one epoch,
        # with about 5 minutes less training; benchmarks/results/cpu_training_sweep.jsonl)
        n_pairs=72,
        inverse_pairs=48,
        benign_pair_share=0.75,
        sft=SFT(
            learning_rate=3e-4,
            # 290 steps. One epoch (362) refused more and over-refused more before DPO (81% / 49% /
            # 23%), and DPO from it stopped at step 60 at the same point as from 0.8 epochs (60% /
            # 13% / 8%), with about 6 minutes more of training and validation passes
            epochs=0.8,
            lr_scheduler="constant_with_warmup",  # linear decay: the refusals never formed (README)
            warmup=0.05,
            repeat=(("borderline", 2),),  # the contrast examples, twice
        ),
        dpo=DPO(
            learning_rate=1e-4,
            loss_types=("sigmoid", "sft"),  # the NLL term keeps what SFT taught
            loss_weights=(1.0, 1.0),
            # up to two passes over the 72 pairs (72 steps), a checkpoint every 12, stopping at
            # the first the over-refusal rule accepts on validation (else the least over-refusing).
            # With a fixed 36 steps one training seed ended at 59% / 12% / 12% of red-team /
            # borderline / helpful validation prompts refused and another at 74% / 40% / 17%;
            # chosen this way, 58% / 12% / 12% (step 24) and 60% / 18% / 7% (step 72). Every 12
            # rather than 24: one demo's SFT adapter was within the rule at step 12 already (60% /
            # 14% / 10%, against 57% / 12% / 10% at step 24), in one validation pass; the next
            # demo's missed it at step 12 (18% borderline) and stopped at step 24
            # (benchmarks/results/cpu_training_sweep.jsonl)
            epochs=2.0,
            select_every=12,
        ),
        reward=Reward(steps=20),
        ppo=PPO(steps=4),
        grpo=GRPO(steps=4),
        rl=False,  # they would take `make demo` past 20 minutes; notebook 06 trains them
        eval_prompts=0,  # every held-out prompt: 110 red-team, 64 borderline, 65 helpful
        eval_max_new_tokens=48,
        lm_eval_limit=50,
    ),
    "t4": Profile(
        name="t4",
        description="Colab Pro or a long session: a 1.5B instruct model in 4-bit, fp16 compute",
        hardware="NVIDIA T4, 16 GB (Colab)",
        memory="~7 GB GPU for QLoRA training",
        policy_model="Qwen/Qwen2.5-1.5B-Instruct",
        load_in_4bit=True,
        dtype="float16",  # the T4 has no bf16
        n_red_team=None,  # every training prompt (the files hold 340 / 81 / 151)
        n_helpful=None,
        n_borderline=None,
        rounds=2,
        batch_size=32,
        max_new_tokens=256,
        critique_max_new_tokens=160,
        round_temperatures=(0.9, 0.4),
        few_shot=1,
        candidate_mode="samples",
        label_source="judge",
        tie_threshold=0.1,
        lora_r=16,
        lora_alpha=32,
        lora_target_modules=_GPU_TARGETS,
        per_device_batch_size=4,
        gradient_accumulation_steps=4,
        max_length=768,
        # the alignment handbook's QLoRA recipes (zephyr-7b-beta): SFT 2e-4, DPO 5e-6. Passes
        # over the data, so the steps follow the files (the issue of sizes: a fixed 200 SFT steps
        # meant ~14 passes over the shipped SFT data)
        sft=SFT(learning_rate=2e-4, epochs=2.0),
        dpo=DPO(learning_rate=5e-6, epochs=1.0),
        reward=Reward(learning_rate=5e-5, epochs=1.0),
        ppo=PPO(learning_rate=1e-5, epochs=2.0),
        grpo=GRPO(learning_rate=1e-5, epochs=2.0),
        gradient_checkpointing=True,
        eval_prompts=0,  # every held-out prompt
        eval_max_new_tokens=256,
        guard_model="Qwen/Qwen3Guard-Gen-0.6B",  # Apache-2.0, ungated
        xstest=True,
        lm_eval_tasks=("arc_easy", "hellaswag", "mmlu", "truthfulqa_mc2", "gsm8k"),
        lm_eval_limit=200,
        # 20 questions from each of MMLU's 57 subjects (1,140) rather than up to 200 (~9,000)
        lm_eval_task_limits=(("mmlu", 20),),
        # lm-eval's log-softmax over Qwen's 151,936-token vocabulary: ~0.6 GB a row for the longest
        # MMLU prompts, so 32 rows (the generation batch) would need ~19 GB of a 15 GB T4
        lm_eval_batch_size=4,
        # lm-eval is most of the GPU profiles' evaluation: the base model and the one the course calls
        # aligned only (--set lm_eval_models=None scores every model)
        lm_eval_models=("base", "dpo"),
    ),
    "a100": Profile(
        name="a100",
        description="One A100: a 7B instruct policy in bf16, the same model as critic and judge",
        hardware="NVIDIA A100, 40-80 GB",
        memory="~30 GB GPU for LoRA training in bf16",
        policy_model="Qwen/Qwen2.5-7B-Instruct",
        load_in_4bit=False,
        dtype="bfloat16",
        n_red_team=None,
        n_helpful=None,
        n_borderline=None,
        rounds=3,
        batch_size=64,
        max_new_tokens=384,
        critique_max_new_tokens=256,
        round_temperatures=(0.9, 0.4),
        few_shot=1,
        candidate_mode="samples",
        label_source="judge",
        judge_mode="all",
        tie_threshold=0.1,
        lora_r=32,
        lora_alpha=64,
        lora_target_modules=_GPU_TARGETS,
        per_device_batch_size=8,
        gradient_accumulation_steps=4,
        max_length=1024,
        sft=SFT(learning_rate=1e-4, epochs=3.0),
        dpo=DPO(learning_rate=5e-6, epochs=2.0),
        reward=Reward(learning_rate=5e-5, epochs=2.0),
        ppo=PPO(learning_rate=5e-6, epochs=4.0),
        grpo=GRPO(learning_rate=5e-6, epochs=4.0),
        gradient_checkpointing=True,
        eval_prompts=0,
        eval_max_new_tokens=384,
        guard_model="Qwen/Qwen3Guard-Gen-4B",
        xstest=True,
        lm_eval_tasks=("arc_easy", "hellaswag", "mmlu", "truthfulqa_mc2", "gsm8k"),
        lm_eval_limit=1000,
        lm_eval_batch_size=8,  # ~5 GB of log-softmax at the longest MMLU prompts, beside 15 GB of weights
        lm_eval_models=("base", "dpo"),
    ),
}


# Colab's free tier: the t4 recipe (same models, 4-bit, fp16, sampled pairs, PPO/GRPO) at sizes
# that finish notebooks 00-07 within one session with margin: `python -m cai_utils plan
# --profile t4-quick` estimates ~46 minutes on a T4 against ~130 for `t4` (estimates, not
# measurements: nobody here has a GPU). What shrinks: 200 training prompts, one revision round,
# shorter answers, and capability tasks without MMLU's 57 subjects
PROFILES["t4-quick"] = PROFILES["t4"].replace(
    name="t4-quick", description="Colab free tier: the t4 recipe sized to finish in one session",
    n_red_team=100, n_helpful=40, n_borderline=60, rounds=1, max_new_tokens=192,
    critique_max_new_tokens=128, eval_max_new_tokens=160,
    lm_eval_tasks=("arc_easy", "hellaswag", "gsm8k"), lm_eval_limit=100, lm_eval_task_limits=())

# What decides which branch of the code a profile takes (as opposed to how big it is): a CPU
# stand-in of a GPU profile copies these and keeps the ``ci`` sizes and the offline model.
# (Not the tie threshold: the offline 135M judge stays within 0.1 of a coin flip on nearly every
# pair, so under the GPU profiles' 0.1 every pair would be a tie and nothing downstream would train.)
BRANCH_FIELDS = ("critic", "load_in_4bit", "rounds", "round_temperatures", "few_shot",
                 "candidate_mode", "label_source", "judge_mode", "lora_target_modules",
                 "gradient_checkpointing", "rl", "lm_eval_models")


def stand_in(name: str) -> Profile:
    """``t4-cpu`` / ``a100-cpu``: a GPU profile's code paths on a CPU, with the offline model.

    Every branch choice of the GPU profile (4-bit, its own critic, two or three critique rounds,
    sampled candidates labelled by the judge, LoRA on every linear layer, GRPO instead of PPO
    on a 4-bit base, ...) with the ``ci`` profile's sizes and tie threshold, the offline default
    model, fp32 and no hub checks, so the tests and notebooks can run each GPU branch here. The
    GPU's compute dtype is left out: a CPU has no fp16 kernels worth the name.

    >>> t4 = stand_in("t4-cpu")
    >>> (t4.load_in_4bit, t4.candidate_mode, t4.policy_model, t4.n_red_team == PROFILES["ci"].n_red_team)
    (True, 'samples', 'default', True)
    """
    gpu = PROFILES.get(name.removesuffix("-cpu"))
    if not name.endswith("-cpu") or gpu is None or gpu.policy_model == DEFAULT_MODEL:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(profile_names())}")
    return PROFILES["ci"].replace(
        name=name, description=f"{gpu.name}'s code paths on a CPU, with the offline model and ci sizes",
        hardware="any CPU", **{field: getattr(gpu, field) for field in BRANCH_FIELDS})


def profile_names() -> list[str]:
    """Every name ``get_profile`` accepts: the profiles and the CPU stand-ins of the GPU ones."""
    return list(PROFILES) + [f"{n}-cpu" for n, p in PROFILES.items() if p.policy_model != DEFAULT_MODEL]


def get_profile(name: "str | Profile | None" = None) -> Profile:
    """The named profile, else ``$CAI_PROFILE``, else ``t4-quick`` with CUDA (Colab's free
    tier; set ``CAI_PROFILE=t4`` for the full sizes) and ``cpu`` without.
    A Profile passes through unchanged, so callers may hand over a modified one.

    >>> get_profile("ci").name
    'ci'
    >>> get_profile(PROFILES["ci"].replace(rounds=3)).rounds
    3
    """
    if isinstance(name, Profile):
        return name
    chosen = name or os.environ.get("CAI_PROFILE") or ("t4-quick" if has_cuda() else "cpu")
    if chosen in PROFILES:
        return PROFILES[chosen]
    return stand_in(chosen)  # t4-cpu, a100-cpu; anything else is a one-line ValueError
