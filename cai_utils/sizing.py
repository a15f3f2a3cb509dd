"""Before you run a profile: roughly how long each stage takes and how much memory training needs.

**Estimates, not measurements.** They come from the model's shape, the profile's sizes and a
device's published peak figures, with one efficiency factor per kind of work:

- training a token costs about ``6 N`` floating-point operations for a model of ``N``
  parameters (forward ``2N``, backward ``4N``; LoRA still back-propagates through the frozen
  weights), ``8 N`` with gradient checkpointing (the forward runs twice), and DPO adds the frozen
  reference model's forward, ``2 N``;
- reading a prompt (prefill, judging, lm-eval log-likelihoods) costs ``2 N`` per token;
- writing a token (decoding) reads every weight once per step for the whole batch, so a step
  takes the longer of ``weight bytes / memory bandwidth`` and ``2 N x batch / compute``.

Seconds are operations divided by ``peak x efficiency``. The efficiencies of this course's CPU
were measured (``benchmarks/sizing.py`` fits them to a ``make demo`` and shows how far the
estimate lands on each stage); the GPU ones are assumptions set beside published figures in the
README (section "Before you run a GPU profile"). Memory: 16-bit or 4-bit weights (embeddings and
the output layer stay 16-bit under 4-bit loading: bitsandbytes quantises the other linear layers
only), LoRA weights with Adam state, activations and the logits.
"""

from __future__ import annotations

import math

from .capability import GENERATIVE
from .hardware import DEVICES, SHAPES, Device, Shape, device_for, shape_for  # noqa: F401 (sizing's API)
from .profiles import Profile


PROMPT_TOKENS = 70  # a chat-formatted prompt from data/prompts, template included
EXAMPLE_TOKENS = 220  # one worked example in a critique or revision prompt
ANSWER_FILL = 0.8  # the share of max_new_tokens an answer uses on average


def lora_params(shape: Shape, profile: Profile) -> int:
    """Trainable LoRA parameters: ``r x (inputs + outputs)`` for each adapted matrix.

    >>> lora_params(SHAPES["default"], Profile(name="x", description="", hardware="", memory=""))
    921600
    """
    h, kv, i, r = shape.hidden, shape.kv_dim, shape.intermediate, profile.lora_r
    matrices = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    targets = profile.lora_target_modules
    chosen = matrices if targets == "all-linear" else {k: v for k, v in matrices.items() if k in targets}
    return shape.layers * sum(r * (a + b) for a, b in chosen.values())


def weight_gb(shape: Shape, load_in_4bit: bool, dtype: str) -> float:
    """Weights in memory. 4-bit NF4 with double quantisation stores about 4.13 bits a weight
    (0.516 bytes) in the linear layers; embeddings stay 16-bit.

    >>> round(weight_gb(SHAPES["Qwen/Qwen2.5-7B-Instruct"], True, "float16"), 2)
    5.55
    """
    wide = 4 if dtype == "float32" else 2
    blocks = shape.block_params * (0.516 if load_in_4bit else wide)
    return (blocks + shape.embedding_params * wide) / 1e9


def train_memory_gb(shape: Shape, profile: Profile, tokens: int, sequences: int = 1) -> float:
    """Peak memory of a LoRA training step on ``sequences`` x batch rows of ``tokens``: weights,
    LoRA weights with gradients and Adam moments (16 bytes each), activations (about
    ``34 x hidden`` bytes per token and layer in 16-bit, one layer's worth plus a checkpoint per
    layer under gradient checkpointing) and the logits with their fp32 copy and gradient."""
    rows = profile.per_device_batch_size * sequences
    per_layer = 34 * shape.hidden * tokens * rows
    activations = (per_layer + 2 * shape.hidden * tokens * rows * shape.layers
                   if profile.gradient_checkpointing else per_layer * shape.layers)
    logits = rows * tokens * shape.vocab * (2 + 4 + 4)
    return (weight_gb(shape, profile.load_in_4bit, profile.dtype) + 16 * lora_params(shape, profile) / 1e9
            + (activations + logits) / 1e9 + 0.5)  # + the CUDA context and allocator slack


# the longest request lm-eval scores in one row, in tokens: 0-shot MMLU's longest subjects (a
# passage and four options) about 1,000; the course's own tasks are one-line questions
LONGEST_TOKENS = {"mmlu": 1000, "truthfulqa_mc2": 400, "hellaswag": 200, "arc_easy": 150}


def lm_eval_memory_gb(shape: Shape, profile: Profile) -> float:
    """Peak memory of lm-eval's first log-likelihood batch (it sorts the longest requests first):
    the weights, and the 16-bit logits with their log-softmax at every position of every row.
    Qwen2.5-1.5B in 4-bit at the generation batch of 32 needs more than a T4's 15 GB:

    >>> t4 = Profile(name="x", description="", hardware="", memory="", load_in_4bit=True,
    ...              dtype="float16", lm_eval_tasks=("mmlu",))
    >>> qwen = SHAPES["Qwen/Qwen2.5-1.5B-Instruct"]
    >>> [round(lm_eval_memory_gb(qwen, t4.replace(lm_eval_batch_size=b)), 1) for b in (32, 4)]
    [21.1, 4.1]
    """
    batch = profile.lm_eval_batch_size or profile.batch_size
    tokens = max((LONGEST_TOKENS.get(t, 60) for t in profile.lm_eval_tasks if t not in GENERATIVE), default=0)
    return weight_gb(shape, profile.load_in_4bit, profile.dtype) + batch * tokens * shape.vocab * 4 / 1e9 + 0.5


def train_seconds(shape: Shape, device: Device, tokens: float, checkpointing: bool,
                  reference: bool = False) -> float:
    """Seconds to train on ``tokens`` tokens (DPO: ``reference`` adds the frozen forward)."""
    per_token = (8 if checkpointing else 6) + (2 if reference else 0)
    return per_token * shape.params * tokens / (device.tflops * 1e12 * device.train_efficiency)


def prefill_seconds(shape: Shape, device: Device, tokens: float) -> float:
    return 2 * shape.params * tokens / (device.tflops * 1e12 * device.prefill_efficiency)


def decode_seconds(shape: Shape, device: Device, n: int, new_tokens: int, batch: int,
                   weight_bytes_gb: float) -> float:
    """Seconds to write ``new_tokens`` for ``n`` prompts in batches of ``batch`` (each batch
    runs as long as its longest answer)."""
    if n == 0:
        return 0.0
    rows = min(batch, n)
    step = max(weight_bytes_gb * 1e9 / (device.bandwidth_gbs * 1e9), device.step_seconds,
               2 * shape.params * rows / (device.tflops * 1e12 * device.decode_efficiency))
    return math.ceil(n / batch) * new_tokens * step


# lm-eval tasks that are groups of subtasks (``limit`` applies to each) or that write answers
SUBTASKS = {"mmlu": 57}
# the test split's size: a limit above it (or above a subject's, for mmlu) scores every question
QUESTIONS = {"mmlu": 14042, "arc_easy": 2376, "hellaswag": 10042, "truthfulqa_mc2": 817, "gsm8k": 1319}
COURSE_QUESTIONS = 110  # each of the course's own tasks (data/capability: 103-120)
HARMBENCH, XSTEST = 159, 250
# per multiple-choice task: (answer options, tokens per option with its question); each option
# is one log-likelihood. The course's own tasks are short questions
CHOICE_TOKENS = {"arc_easy": (4, 45), "hellaswag": (4, 90), "mmlu": (4, 130), "truthfulqa_mc2": (8, 60)}
COURSE_TASK = (4, 25)


def _counts(profile: Profile) -> dict[str, int]:
    """How many prompts each stage works on, read from the data files."""
    from .data import load_prompts, project_root
    from .pipeline import stage1_items

    items = stage1_items(profile)
    repeat = dict(profile.sft.repeat)
    records = sum(repeat.get(i.get("set", ""), 1) for i in items)
    red = sum(i.get("set") == "red_team" for i in items)
    held = project_root() / "data" / "prompts"
    sizes = {split: {s: len(load_prompts(held / f"{s}_{split}.jsonl")) for s in ("red_team", "borderline", "helpful")}
             for split in ("test", "val")}
    if profile.eval_prompts:
        sizes = {k: {s: min(n, profile.eval_prompts) for s, n in v.items()} for k, v in sizes.items()}
    return {"prompts": len(items), "red_team": red, "records": records,
            "pairs": profile.n_pairs or len(items),
            **{f"{split}_{s}": n for split, v in sizes.items() for s, n in v.items()}}


def plan(profile: Profile, device: Device, models: int | None = None) -> list[dict]:
    """One row per stage of ``run`` under ``profile`` on ``device``: what it does, estimated
    seconds, and for training and lm-eval the estimated peak memory (GB). ``models``: how many models the
    report evaluates (default: base, SFT, DPO and, with ``rl``, PPO)."""
    from .training import steps_for

    policy = shape_for(profile.policy_model)
    critic = shape_for(profile.model_for("critic") if profile.critic in ("self", "course") else profile.critic)
    judge = shape_for(profile.model_for("judge"))
    c = _counts(profile)
    wgb = weight_gb(policy, profile.load_in_4bit, profile.dtype)
    answer = round(ANSWER_FILL * profile.max_new_tokens)
    example = min(profile.max_length, PROMPT_TOKENS + answer)
    rows = []

    # stage 1: first answers, then per round a critique and a revision, each prompt carrying
    # the worked examples
    n1 = 0 if profile.critic == "course" else c["prompts"]
    n1 += profile.self_critique_prompts if profile.critic != "self" else 0
    # the worked examples are read once per batch (generation's shared prefix), each item's own
    # prompt and answer once per item
    read = n1 * (PROMPT_TOKENS + answer) + math.ceil(n1 / profile.batch_size) * profile.few_shot * EXAMPLE_TOKENS
    s = decode_seconds(policy, device, n1, profile.max_new_tokens, profile.batch_size, wgb)
    s += profile.rounds * (prefill_seconds(critic, device, 2 * read)
                           + decode_seconds(critic, device, n1, profile.critique_max_new_tokens, profile.batch_size, wgb)
                           + decode_seconds(critic, device, n1, profile.max_new_tokens, profile.batch_size, wgb))
    what = ("course-written records copied" if profile.critic == "course" else f"{c['prompts']} prompts")
    rows.append({"stage": "critique", "work": f"{what}; {n1} prompts x {profile.rounds} round(s) generated", "seconds": s})

    # stage 2: candidates (two samples per prompt in "samples" mode), then the judge reads each
    # pair in both orders, once per principle asked
    pairs = c["pairs"]
    s = 2 * decode_seconds(policy, device, pairs, profile.max_new_tokens, profile.batch_size, wgb) \
        if profile.candidate_mode == "samples" else 0.0
    principles = 16 if profile.judge_mode == "all" else 1
    s += prefill_seconds(judge, device, 2 * principles * pairs * (PROMPT_TOKENS + 150 + 2 * answer))
    rows.append({"stage": "label", "work": f"{pairs} pairs x 2 orders x {principles} principle(s)", "seconds": s})

    batch = profile.per_device_batch_size * profile.gradient_accumulation_steps
    ckpt = profile.gradient_checkpointing
    for stage, n, epochs, fixed, seqs, ref in (
            ("sft", c["records"], profile.sft.epochs, profile.sft.steps, 1, False),
            ("dpo", pairs, profile.dpo.epochs, profile.dpo.steps, 2, True),
            ("reward", pairs, profile.reward.epochs, profile.reward.steps, 2, False)):
        if stage == "reward" and not profile.rl:
            continue
        steps = steps_for(n, epochs, fixed, profile)
        tokens = steps * batch * seqs * example
        work, s = f"{steps} steps x {batch} x {seqs} seq(s) x ~{example} tokens", 0.0
        if stage == "dpo" and profile.dpo.select_every:  # each checkpoint answers the validation prompts
            from .checkpoint_select import checkpoint_steps

            kept = len(checkpoint_steps(steps, profile.dpo.select_every))
            n_val = c["val_red_team"] + c["val_borderline"] + c["val_helpful"]
            s = kept * decode_seconds(policy, device, n_val, profile.eval_max_new_tokens, profile.batch_size, wgb)
            work += f"; {kept} checkpoints x {n_val} validation prompts"
            if profile.dpo.stop_early:  # the whole run is the most it can take
                work = "up to " + work.replace("; ", "; up to ") + " (stops at the first within the rule)"
        rows.append({"stage": stage, "work": work,
                     "seconds": s + train_seconds(policy, device, tokens, ckpt, reference=ref),
                     "memory_gb": train_memory_gb(policy, profile, example, seqs)})
    if profile.rl:
        # PPO holds three copies (policy, reward model, value model) and trains two; on a 4-bit
        # base the pipeline runs GRPO instead (no value model: one copy, scored by the reward model)
        grpo = profile.load_in_4bit
        rl = profile.grpo if grpo else profile.ppo  # GRPO's batch counts samples: a group per prompt
        steps = steps_for(c["red_team"] * (rl.num_generations if grpo else 1), rl.epochs, rl.steps, profile)
        s = steps * (decode_seconds(policy, device, batch, profile.max_new_tokens, batch, wgb)
                     + train_seconds(policy, device, (1 if grpo else 2) * batch * example, ckpt)
                     + prefill_seconds(policy, device, 2 * batch * example))  # reference and reward
        rows.append({"stage": "grpo" if grpo else "ppo", "work": f"{steps} steps, each writing {batch} answers",
                     "seconds": s, "memory_gb": train_memory_gb(policy, profile, example) + (wgb if grpo else 2 * wgb)})

    # the report: every model answers every held-out prompt, the judge rates the answers, and
    # lm-eval scores the capability tasks
    models = models or (4 if profile.rl else 3)
    cap = profile.eval_prompts or None  # prompts per set (0: every prompt)
    external = min(HARMBENCH, cap or HARMBENCH) + (min(XSTEST, cap or XSTEST) if profile.xstest else 0)
    n_eval = c["test_red_team"] + c["test_borderline"] + c["test_helpful"] + external
    eval_tokens = profile.eval_max_new_tokens
    s = models * decode_seconds(policy, device, n_eval, eval_tokens, profile.batch_size, wgb)
    per_task = {t: dict(profile.lm_eval_task_limits).get(t, profile.lm_eval_limit) for t in profile.lm_eval_tasks}
    limits = {t: min(SUBTASKS.get(t, 1) * (math.inf if n is None else n), QUESTIONS.get(t, COURSE_QUESTIONS))
              for t, n in per_task.items()}  # questions per task (a limit of None: all of them)
    multiple = [t for t in profile.lm_eval_tasks if t not in GENERATIVE]
    questions = sum(limits.values())
    scored = models if profile.lm_eval_models is None else min(models, len(profile.lm_eval_models))
    s += scored * prefill_seconds(policy, device, sum(limits[t] * math.prod(CHOICE_TOKENS.get(t, COURSE_TASK))
                                                      for t in multiple))
    s += scored * sum(decode_seconds(policy, device, limits[t], GENERATIVE[t], profile.batch_size, wgb)
                      + prefill_seconds(policy, device, limits[t] * 800)  # few-shot GSM8K prompts
                      for t in profile.lm_eval_tasks if t in GENERATIVE)
    rows.append({"stage": "answers", "work": f"{models} models x {n_eval} held-out prompts; "
                 f"{scored} models x {questions} lm-eval questions", "seconds": s,
                 **({"memory_gb": lm_eval_memory_gb(policy, profile)} if questions else {})})
    s = prefill_seconds(judge, device, models * c["test_red_team"] * (PROMPT_TOKENS + 200 + eval_tokens)
                        + 2 * (models - 1) * c["test_helpful"] * (PROMPT_TOKENS + 150 + 2 * eval_tokens))
    rows.append({"stage": "judge", "work": f"{models} x {c['test_red_team']} ratings, "
                 f"{models - 1} x {c['test_helpful']} helpfulness pairs", "seconds": s})
    # every stage loads its models: the policy (or an adapter on it), a judge, a reference
    loads = 2 + 1 + 2 + 2 + (4 if profile.rl else 0) + models + 1
    rows.append({"stage": "loading", "work": f"about {loads} model loads", "seconds": loads * device.load_seconds})
    return rows


def plan_table(profile: Profile, device: Device, rows: list[dict] | None = None) -> str:
    """The plan as a Markdown table with a total, labelled as an estimate."""
    rows = plan(profile, device) if rows is None else rows
    fits = lambda gb: "" if gb is None else f"{gb:.1f}" + (" (over!)" if gb > device.memory_gb else "")  # noqa: E731
    lines = [f"Estimate for profile `{profile.name}` on {device.name} (not a measurement; "
             "see cai_utils/sizing.py for how it is made):", "",
             "| stage | work | minutes | peak memory, GB |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['work']} | {r['seconds'] / 60:.1f} | {fits(r.get('memory_gb'))} |" for r in rows]
    total = sum(r["seconds"] for r in rows)
    lines.append(f"| **total** | | **{total / 60:.0f}** | |")
    return "\n".join(lines)


def estimate_line(profile: Profile, stages: list[str]) -> str:
    """The line a notebook prints before its work: the estimated minutes of the stages it runs
    under the active profile (reward and PPO/GRPO counted even where ``run`` leaves them out),
    and the peak memory of those that hold one (training, lm-eval)."""
    device = device_for(profile)
    rl = bool({"reward", "ppo", "grpo"} & set(stages))
    rows = [r for r in plan(profile.replace(rl=True) if rl else profile, device) if r["stage"] in stages]
    parts = ", ".join(f"{r['stage']} {r['seconds'] / 60:.1f}" for r in rows)
    memory = ", ".join(f"{r['stage']} {r['memory_gb']:.1f} GB" for r in rows if "memory_gb" in r)
    return (f"estimate for {profile.name} on {device.name}: ~{sum(r['seconds'] for r in rows) / 60:.1f} min "
            f"({parts})" + (f"; peak memory {memory}" if memory else "")
            + "; an estimate, not a measurement (python -m cai_utils plan)")
