"""Stage 3, RL from AI feedback: a reward model on the stage-2 pairs, then PPO
(``trl.experimental.ppo``) or GRPO (core TRL) against it, starting from the SFT adapter."""

from __future__ import annotations

import time
from pathlib import Path

from .data import DataError
from .locks import writes_to
from .profiles import DEFAULT_MODEL, Profile, get_profile
from .adapters import adapter_base, is_current, is_done, with_adapter
from .training import (TrainResult, base_model, finish, fp32_trainable, load_records, lora_config, steps_for,
                       trainer_args)


def reward_scores(model, tokenizer, prompts: list[list], completions: list[list],
                  batch_size: int = 8) -> list[float]:
    """The reward model's score for each (prompt, completion) conversation."""
    import torch

    texts = [tokenizer.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
    scores = []
    device = next(model.parameters()).device
    for at in range(0, len(texts), batch_size):
        enc = tokenizer(texts[at:at + batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        with torch.inference_mode():
            scores += model(**enc).logits[:, 0].float().tolist()
    return scores


def reward_is_current(out: str | Path, data: str | Path, soft_labels: bool, settings: dict | None = None) -> bool:
    """``adapters.is_current`` for a reward model, which must also have been trained on the same
    kind of labels (the judge's probabilities or 0/1): the data file is the same either way."""
    import json

    config = Path(out) / "train_config.json"
    return (is_current(out, data, settings=settings) and config.is_file()
            and bool(json.loads(config.read_text()).get("soft_labels", False)) == soft_labels)


def pairwise_outcomes(model, tokenizer, records: list[dict]) -> list[float]:
    """Per pair, 1.0 when the reward model scores chosen above rejected (TRL gives only the share)."""
    prompts = [r["prompt"] for r in records]
    chosen = reward_scores(model, tokenizer, prompts, [r["chosen"] for r in records])
    rejected = reward_scores(model, tokenizer, prompts, [r["rejected"] for r in records])
    return [float(c > r) for c, r in zip(chosen, rejected)]


def pairwise_accuracy(model, tokenizer, records: list[dict]) -> float:
    """Share of pairs whose chosen answer the reward model scores above the rejected one."""
    return sum(pairwise_outcomes(model, tokenizer, records)) / len(records)


def soft_bradley_terry(margin, p_chosen):
    """The Bradley-Terry loss against a soft label: with r = reward(chosen) - reward(rejected)
    and p the judge's probability that ``chosen`` is better,
    -[p log sigma(r) + (1 - p) log sigma(-r)], averaged. At p = 1 it is the usual hard loss,
    -log sigma(r); at p = 0.5 it is smallest at r = 0 (the judge could not tell: no preference).

    >>> import torch
    >>> r = torch.tensor([2.0, 0.0])
    >>> round(soft_bradley_terry(r, torch.tensor([1.0, 1.0])).item(), 4) == round(
    ...     -torch.nn.functional.logsigmoid(r).mean().item(), 4)
    True
    >>> r = torch.zeros(1, requires_grad=True)
    >>> soft_bradley_terry(r, torch.tensor([0.5])).backward(); r.grad.item()
    0.0
    """
    from torch.nn.functional import logsigmoid

    return -(p_chosen * logsigmoid(margin) + (1 - p_chosen) * logsigmoid(-margin)).mean()


def soft_label_records(path, records: list[dict]) -> list[dict]:
    """``records`` (prompt, chosen, rejected) with the judge's P(chosen) from the stage-2 file,
    carried in TRL's ``margin`` column (``SoftRewardTrainer`` reads it as the soft label)."""
    from .data import read_jsonl

    rows = read_jsonl(path)
    missing = [n for n, r in enumerate(rows, start=1) if (r.get("judge") or {}).get("p_chosen") is None]
    if missing:
        raise DataError(f"{path}: record {missing[0]} has no judge p_chosen: soft labels need pairs "
                        "labelled with the judge's probabilities (stage 2's `label` writes them)")
    return [{**r, "margin": float(row["judge"]["p_chosen"])} for r, row in zip(records, rows)]


def soft_trainer_class():
    from trl import RewardTrainer

    class SoftRewardTrainer(RewardTrainer):
        """TRL's RewardTrainer with the soft Bradley-Terry loss: each pair's ``margin`` column
        holds the judge's P(chosen) instead of a margin. TRL's own step (its reward metrics
        and logging) runs unchanged; only the loss it returns is replaced."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            p_chosen = inputs.pop("margin")
            _, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                              num_items_in_batch=num_items_in_batch)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1).float(), chunks=2)
            loss = soft_bradley_terry(chosen - rejected, p_chosen.to(chosen.device))
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
            return (loss, outputs) if return_outputs else loss

    return SoftRewardTrainer


@writes_to("out")
def train_reward(data, out, model: str = DEFAULT_MODEL, init=None, load_in_4bit: bool | None = None,
                 max_steps: int | None = None, profile: str | Profile | None = None,
                 held_out: float = 0.25, soft_labels: bool | None = None) -> TrainResult:
    """A scalar-head reward model on stage-2 pairs (RewardTrainer, LoRA with the head trained
    in full); reports pairwise accuracy on every 1/held_out-th pair, held out from training.
    ``soft_labels`` (default: the profile's ``reward.soft_labels``) trains on the judge's
    P(chosen) with ``soft_bradley_terry`` instead of treating every label as certain."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    prof = get_profile(profile)
    data, out = Path(data), Path(out)
    soft = prof.reward.soft_labels if soft_labels is None else soft_labels
    records = load_records(data, "reward")
    if soft:
        records = soft_label_records(data, records)
    every = max(2, round(1 / held_out))
    evaluation = records[::every] if len(records) >= 4 else []
    training = [r for i, r in enumerate(records) if not evaluation or i % every]
    four_bit = prof.load_in_4bit if load_in_4bit is None else load_in_4bit
    start = time.perf_counter()
    base, tokenizer = base_model(model, prof, four_bit,
                                 model_class=AutoModelForSequenceClassification, num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    trainer = (soft_trainer_class() if soft else RewardTrainer)(
        model=with_adapter(base, init), processing_class=tokenizer,
        args=trainer_args(RewardConfig, prof, out, max_steps or steps_for(
                              len(training), prof.reward.epochs, prof.reward.steps, prof),
                          prof.reward.learning_rate, max_length=prof.max_length),
        train_dataset=Dataset.from_list(training),
        peft_config=None if init else lora_config(prof, "SEQ_CLS"))
    fp32_trainable(trainer).train()
    metrics = {"held_out_pairs": len(evaluation)}
    if evaluation:
        trainer.model.eval()
        metrics["held_out_pairwise_accuracy"] = pairwise_accuracy(trainer.model, tokenizer, evaluation)
    return finish(trainer, "reward", out, prof, model, data, init, start, metrics,
                  load_in_4bit=four_bit, soft_labels=soft)


def load_reward_model(folder: str | Path, profile: Profile, load_in_4bit: bool = False):
    """A trained reward model with its adapter merged in (PPO and GRPO need a plain model)."""
    from transformers import AutoModelForSequenceClassification

    if not is_done(folder):
        raise DataError(f"{folder}: no finished reward model there (run `train reward` first)")
    model, tokenizer = base_model(adapter_base(folder), profile, load_in_4bit,
                                  model_class=AutoModelForSequenceClassification, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    merged = with_adapter(model, folder, trainable=False).merge_and_unload()
    merged.eval()
    return merged, tokenizer


def value_model(reward: str | Path, profile: Profile):
    """PPO's value model: the reward model (adapter merged) with a LoRA adapter of its own and
    its score head trainable, so the critic learns while its backbone stays frozen. A fully
    trainable copy would be a third full-size model beside the policy and the reward model."""
    from peft import inject_adapter_in_model

    model, _ = load_reward_model(reward, profile)
    model = inject_adapter_in_model(lora_config(profile), model, adapter_name="value")
    for name, parameter in model.named_parameters():  # LoRA layers and the head learn, nothing else
        parameter.requires_grad = "lora_" in name or name.startswith("score.")
    model.train()
    return model


def ppo_episodes(steps: int, profile: Profile) -> int:
    """The ``total_episodes`` that give ``steps`` PPO updates: TRL makes one update per
    ``per_device_batch_size x gradient_accumulation_steps`` episodes in each process.

    >>> from cai_utils.profiles import PROFILES
    >>> a100 = PROFILES["a100"]
    >>> ppo_episodes(100, a100) // (a100.per_device_batch_size * a100.gradient_accumulation_steps)
    100
    """
    from .devices import processes  # under accelerate launch TRL splits the episodes among processes

    return steps * profile.per_device_batch_size * profile.gradient_accumulation_steps * processes()[1]


def _policy(init, model: str | None, profile: Profile):
    """The policy to start RL from: the SFT adapter merged into its base, or a base model."""
    name = model or (adapter_base(init) if init else DEFAULT_MODEL)
    base, tokenizer = base_model(name, profile, False)
    if init:
        base = with_adapter(base, init, trainable=False).merge_and_unload()
    return name, base, tokenizer


PPO_NEEDS_FULL_VALUE_MODEL = (
    "PPO holds three 16-bit copies of the model (the policy with the SFT adapter merged, the "
    "reward model, and the value model over a copy of it), beyond this profile's 4-bit GPU "
    "budget; use `train grpo` (no value model) here, or the a100 profile")


@writes_to("out")
def train_ppo(prompts, out, reward, init=None, model: str | None = None,
              max_steps: int | None = None, profile: str | Profile | None = None) -> TrainResult:
    """PPO (``trl.experimental.ppo``): the policy starts from the SFT model with a fresh LoRA
    adapter, so the reference is the SFT model (adapter disabled); the KL coefficient comes from
    the profile and a reply without an end-of-turn token is penalised."""
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from .data import load_prompts

    prof = get_profile(profile)
    if prof.load_in_4bit:
        raise ValueError(PPO_NEEDS_FULL_VALUE_MODEL)
    prompts, out = Path(prompts), Path(out)
    items = load_prompts(prompts)
    reward_model, _ = load_reward_model(reward, prof)
    value = value_model(reward, prof)
    value_before = {k: v.detach().clone() for k, v in value.named_parameters() if v.requires_grad}
    name, policy, tokenizer = _policy(init, model, prof)
    ids = [tokenizer.apply_chat_template(i["messages"], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"] for i in items]
    batch = prof.per_device_batch_size
    steps = max_steps or steps_for(len(items), prof.ppo.epochs, prof.ppo.steps, prof)
    config = trainer_args(PPOConfig, prof, out, steps, prof.ppo.learning_rate,
                          total_episodes=ppo_episodes(steps, prof),
                          num_ppo_epochs=1, num_mini_batches=1,
                          response_length=prof.max_new_tokens, kl_coef=prof.ppo.kl_coef,
                          missing_eos_penalty=1.0, stop_token="eos", num_sample_generations=0,
                          local_rollout_forward_batch_size=batch)
    start = time.perf_counter()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=None,
                         reward_model=reward_model, value_model=value,
                         train_dataset=Dataset.from_dict({"input_ids": ids}),
                         peft_config=lora_config(prof))
    trainer.train()
    stats = [e for e in trainer.state.log_history if "objective/scores" in e]
    metrics = {"last_mean_score": stats[-1]["objective/scores"],
               "last_kl": stats[-1]["objective/kl"]} if stats else {}
    metrics["value_trainable_params"] = sum(v.numel() for v in value_before.values())
    metrics["value_params_changed"] = sum(  # the critic learnt: tensors that moved in training
        not (v.detach() == value_before[k]).all() for k, v in value.named_parameters() if k in value_before)
    return finish(trainer, "ppo", out, prof, name, prompts, init, start, metrics,
                  reward=str(reward), kl_coef=prof.ppo.kl_coef)


def grpo_config(profile: Profile, out: Path, steps: int, num_generations: int | None = None):
    """GRPOConfig with a batch that holds whole groups of ``num_generations`` samples (default:
    the profile's ``grpo.num_generations``). The
    batch goes to the constructor: GRPOConfig derives its generation batch from it in
    ``__post_init__``, so setting it afterwards leaves the derived sizes stale."""
    from trl import GRPOConfig

    num_generations = num_generations or profile.grpo.num_generations
    batch = max(num_generations, profile.per_device_batch_size // num_generations * num_generations)
    return trainer_args(GRPOConfig, profile.replace(per_device_batch_size=batch), out, steps,
                        profile.grpo.learning_rate, num_generations=num_generations,
                        max_completion_length=profile.max_new_tokens, beta=profile.grpo.kl_coef)


@writes_to("out")
def train_grpo(prompts, out, reward, init=None, model: str | None = None,
               max_steps: int | None = None, profile: str | Profile | None = None,
               num_generations: int | None = None) -> TrainResult:
    """GRPO from core TRL with the same reward model: no value model, the baseline is the mean
    reward of a group of ``num_generations`` samples for the same prompt (default: the
    profile's ``grpo.num_generations``); the profile's ``grpo`` section holds its settings."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from .data import load_prompts

    prof = get_profile(profile)
    prompts, out = Path(prompts), Path(out)
    items = load_prompts(prompts)
    reward_model, reward_tokenizer = load_reward_model(reward, prof)
    name, policy, tokenizer = _policy(init, model, prof)
    num_generations = num_generations or prof.grpo.num_generations
    steps = max_steps or steps_for(len(items) * num_generations, prof.grpo.epochs, prof.grpo.steps, prof)
    config = grpo_config(prof, out, steps, num_generations)
    start = time.perf_counter()
    trainer = GRPOTrainer(model=policy, reward_funcs=reward_model, args=config,
                          train_dataset=Dataset.from_list([{"prompt": i["messages"]} for i in items]),
                          processing_class=tokenizer, reward_processing_classes=reward_tokenizer,
                          peft_config=lora_config(prof))
    fp32_trainable(trainer).train()
    stats = [e for e in trainer.state.log_history if "reward" in e]
    metrics = {"last_mean_reward": stats[-1]["reward"]} if stats else {}
    return finish(trainer, "grpo", out, prof, name, prompts, init, start, metrics,
                  reward=str(reward), beta=prof.grpo.kl_coef)
