"""Stage 3: SFT (LoRA / QLoRA), DPO, a reward model, PPO and GRPO; small builders around TRL.

Every stage reads JSONL records (checked before any model is loaded), trains a LoRA adapter,
and writes to its output folder: the adapter, ``train_config.json``, ``training_log.json``, a
model card naming the constitution and the data, and a manifest. Sizes come from the profile.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .data import DataError, file_sha256, read_jsonl, read_manifest, write_json_atomic, write_manifest
from .profiles import DEFAULT_MODEL, Profile, get_profile

NEEDS = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected"),
         "reward": ("prompt", "chosen", "rejected")}


@dataclass
class TrainResult:
    stage: str
    out: Path
    steps: int
    seconds: float
    trainable_params: int
    total_params: int
    log: list
    metrics: dict


def load_records(path, stage: str) -> list[dict]:
    """Training records for a stage, checked before any model loads (one-line DataErrors)."""
    records = read_jsonl(path)
    if not records:
        raise DataError(f"{path}: no records in the file")
    for number, record in enumerate(records, start=1):
        missing = [key for key in NEEDS[stage] if key not in record]
        if missing:
            raise DataError(f"{path}: record {number} has no {', '.join(missing)}: expected "
                            f"{'stage-1 (critique)' if stage == 'sft' else 'stage-2 (label)'} "
                            f"records for {stage}")
    if stage == "sft":
        records = [r for r in records if "unrevised" not in r.get("flags", [])]
        if not records:
            raise DataError(f"{path}: every record is flagged 'unrevised': nothing to learn from")
    return [{key: r[key] for key in NEEDS[stage]} for r in records]


def lora_config(profile: Profile, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    targets = profile.lora_target_modules
    return LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha,
                      lora_dropout=profile.lora_dropout, task_type=task_type,
                      target_modules=targets if isinstance(targets, str) else list(targets),
                      modules_to_save=["score"] if task_type == "SEQ_CLS" else None)


def trainer_args(config_class, profile: Profile, out: Path, steps: int, **extra):
    """TRL config for a profile. Gradient checkpointing only with CUDA: on this course's CPU it
    made DPO, reward and PPO steps 6-7x slower (TRL 1.x turns it on by default)."""
    import torch

    cuda = torch.cuda.is_available()
    return config_class(
        output_dir=str(out), max_steps=steps, learning_rate=profile.learning_rate,
        per_device_train_batch_size=profile.per_device_batch_size,
        gradient_accumulation_steps=profile.gradient_accumulation_steps,
        gradient_checkpointing=profile.gradient_checkpointing and cuda,
        fp16=cuda and profile.dtype == "float16", bf16=cuda and profile.dtype == "bfloat16",
        use_cpu=not cuda, logging_steps=1, save_strategy="no", report_to=[], seed=0, **extra)


def memory_estimate_gb(total_params: int, trainable_params: int, load_in_4bit: bool,
                       dtype: str = "float16", activations_gb: float = 1.0) -> float:
    """Rough GPU memory for LoRA training: weights, trainable weights with Adam state, and a
    fixed allowance for activations.

    >>> round(memory_estimate_gb(1_500_000_000, 20_000_000, True), 1)
    2.1
    """
    weight_bytes = 0.55 if load_in_4bit else (4 if dtype == "float32" else 2)
    adam_bytes = 4 + 4 + 4 + 4  # fp32 master weight, gradient, two moments
    return (total_params * weight_bytes + trainable_params * adam_bytes) / 1e9 + activations_gb


def base_model(name: str, profile: Profile, load_in_4bit: bool, model_class=None, **kwargs):
    """Load a model to train; 4-bit models get PEFT's k-bit preparation."""
    from .models import load_model

    model, tokenizer = load_model(name, load_in_4bit=load_in_4bit, dtype=profile.dtype,
                                  model_class=model_class, **kwargs)
    if load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=profile.gradient_checkpointing and model.device.type == "cuda")
    return model, tokenizer


def adapter_base(init: str | Path) -> str:
    """The model name an adapter of ours was trained on."""
    config = Path(init) / "train_config.json"
    if not config.is_file():
        raise DataError(f"{init}: not an adapter folder from `train` (no train_config.json)")
    return json.loads(config.read_text())["model"]


def with_adapter(model, init: str | Path | None, trainable: bool = True):
    """Wrap a model with an adapter saved earlier (trainable by default)."""
    if init is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(init), is_trainable=trainable)


def _provenance(data: Path) -> dict:
    """What the data was made from, read from its manifest (for the model card)."""
    manifest = read_manifest(data) or {}
    return {"data": str(data), "data_sha256": file_sha256(data),
            "constitution": manifest.get("constitution"), "data_model": manifest.get("model"),
            "data_manifest": manifest.get("file")}


def finish(trainer, stage: str, out: Path, profile: Profile, model_name: str, data: Path,
           init, start: float, metrics: dict | None = None, **config) -> TrainResult:
    """Save the adapter, its config, log, model card and manifest; return what happened."""
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    seconds = round(time.perf_counter() - start, 1)
    provenance = _provenance(data)
    settings = {"stage": stage, "model": model_name, "init": str(init) if init else None,
                "profile": profile.name, **config, "profile_settings": dataclasses.asdict(profile)}
    write_json_atomic(out / "train_config.json", settings)
    write_json_atomic(out / "training_log.json", trainer.state.log_history)
    constitution = provenance["constitution"] or {}
    card = [f"# {stage.upper()} adapter for {model_name}", "",
            f"Trained with `cai_utils` ({stage}, profile `{profile.name}`, "
            f"{trainer.state.global_step} steps, {seconds}s).", "",
            f"- constitution: {constitution.get('name')} {constitution.get('version')} "
            f"(sha256 {constitution.get('hash')})",
            f"- data: `{provenance['data']}` (sha256 {provenance['data_sha256'][:16]}...), "
            f"manifest `{provenance['data_manifest']}`",
            f"- started from: {init or 'the base model'}",
            f"- trainable parameters: {trainable:,} of {total:,}",
            *[f"- {k}: {v}" for k, v in (metrics or {}).items()]]
    (out / "README.md").write_text("\n".join(card) + "\n", encoding="utf-8")
    result = TrainResult(stage, out, trainer.state.global_step, seconds, trainable, total,
                         trainer.state.log_history, metrics or {})
    write_manifest(out / "adapter.jsonl", complete=True, stage=stage, model=model_name,
                   profile=profile.name, steps=result.steps, seconds=seconds, metrics=metrics or {},
                   **provenance)
    return result


def is_done(out: str | Path) -> bool:
    """True when a stage's folder holds a complete adapter (so a pipeline can skip it)."""
    manifest = read_manifest(Path(out) / "adapter.jsonl")
    return bool(manifest and manifest.get("complete"))


def train_sft(data, out, model: str = DEFAULT_MODEL, init=None, load_in_4bit: bool | None = None,
              max_steps: int | None = None, profile: str | Profile | None = None) -> TrainResult:
    """Supervised fine-tuning on stage-1 records (prompt-completion: loss on the revision only)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    data, out = Path(data), Path(out)
    records = load_records(data, "sft")
    four_bit = prof.load_in_4bit if load_in_4bit is None else load_in_4bit
    start = time.perf_counter()
    base, tokenizer = base_model(model, prof, four_bit)
    steps = max_steps or prof.sft_steps
    trainer = SFTTrainer(
        model=with_adapter(base, init), processing_class=tokenizer,
        args=trainer_args(SFTConfig, prof, out, steps, max_length=prof.max_length),
        train_dataset=Dataset.from_list(records),
        peft_config=None if init else lora_config(prof))
    trainer.train()
    return finish(trainer, "sft", out, prof, model, data, init, start, load_in_4bit=four_bit)


def train_dpo(data, out, model: str | None = None, init=None, load_in_4bit: bool | None = None,
              max_steps: int | None = None, profile: str | Profile | None = None) -> TrainResult:
    """DPO on stage-2 pairs, from the SFT adapter; TRL copies that adapter into a frozen
    reference, so the reference is the SFT model without a second copy of the weights."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    data, out = Path(data), Path(out)
    records = load_records(data, "dpo")
    model = model or (adapter_base(init) if init else DEFAULT_MODEL)
    four_bit = prof.load_in_4bit if load_in_4bit is None else load_in_4bit
    start = time.perf_counter()
    base, tokenizer = base_model(model, prof, four_bit)
    trainer = DPOTrainer(
        model=with_adapter(base, init), processing_class=tokenizer,
        args=trainer_args(DPOConfig, prof, out, max_steps or prof.dpo_steps,
                          beta=prof.dpo_beta, max_length=prof.max_length),
        train_dataset=Dataset.from_list(records),
        peft_config=None if init else lora_config(prof))
    trainer.train()
    rewards = [e for e in trainer.state.log_history if "rewards/accuracies" in e]
    metrics = {"last_reward_accuracy": rewards[-1]["rewards/accuracies"],
               "last_reward_margin": rewards[-1]["rewards/margins"]} if rewards else {}
    return finish(trainer, "dpo", out, prof, model, data, init, start, metrics,
                  load_in_4bit=four_bit, beta=prof.dpo_beta)


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


def pairwise_accuracy(model, tokenizer, records: list[dict]) -> float:
    """Share of pairs whose chosen answer the reward model scores above the rejected one."""
    prompts = [r["prompt"] for r in records]
    chosen = reward_scores(model, tokenizer, prompts, [r["chosen"] for r in records])
    rejected = reward_scores(model, tokenizer, prompts, [r["rejected"] for r in records])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(records)


def train_reward(data, out, model: str = DEFAULT_MODEL, init=None, load_in_4bit: bool | None = None,
                 max_steps: int | None = None, profile: str | Profile | None = None,
                 held_out: float = 0.25) -> TrainResult:
    """A scalar-head reward model on stage-2 pairs (RewardTrainer, LoRA with the head trained
    in full); reports pairwise accuracy on every 1/held_out-th pair, held out from training."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    data, out = Path(data), Path(out)
    records = load_records(data, "reward")
    every = max(2, round(1 / held_out))
    evaluation = records[::every] if len(records) >= 4 else []
    training = [r for i, r in enumerate(records) if not evaluation or i % every]
    four_bit = prof.load_in_4bit if load_in_4bit is None else load_in_4bit
    start = time.perf_counter()
    base, tokenizer = base_model(model, prof, four_bit,
                                 model_class=AutoModelForSequenceClassification, num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(
        model=with_adapter(base, init), processing_class=tokenizer,
        args=trainer_args(RewardConfig, prof, out, max_steps or prof.reward_steps,
                          max_length=prof.max_length),
        train_dataset=Dataset.from_list(training),
        peft_config=None if init else lora_config(prof, "SEQ_CLS"))
    trainer.train()
    metrics = {"held_out_pairs": len(evaluation)}
    if evaluation:
        trainer.model.eval()
        metrics["held_out_pairwise_accuracy"] = pairwise_accuracy(trainer.model, tokenizer, evaluation)
    return finish(trainer, "reward", out, prof, model, data, init, start, metrics,
                  load_in_4bit=four_bit)


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


def _policy(init, model: str | None, profile: Profile):
    """The policy to start RL from: the SFT adapter merged into its base, or a base model."""
    name = model or (adapter_base(init) if init else DEFAULT_MODEL)
    base, tokenizer = base_model(name, profile, False)
    if init:
        base = with_adapter(base, init, trainable=False).merge_and_unload()
    return name, base, tokenizer


def train_ppo(prompts, out, reward, init=None, model: str | None = None,
              max_steps: int | None = None, profile: str | Profile | None = None) -> TrainResult:
    """PPO (``trl.experimental.ppo``): the policy starts from the SFT model with a fresh LoRA
    adapter, so the reference is the SFT model (adapter disabled); the KL coefficient comes from
    the profile and a reply without an end-of-turn token is penalised."""
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from .data import load_prompts

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    prompts, out = Path(prompts), Path(out)
    items = load_prompts(prompts)
    reward_model, _ = load_reward_model(reward, prof)
    value_model, _ = load_reward_model(reward, prof)
    name, policy, tokenizer = _policy(init, model, prof)
    ids = [tokenizer.apply_chat_template(i["messages"], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"] for i in items]
    batch = prof.per_device_batch_size
    steps = max_steps or prof.ppo_steps
    config = trainer_args(PPOConfig, prof, out, steps, total_episodes=steps * batch,
                          num_ppo_epochs=1, num_mini_batches=1,
                          response_length=prof.max_new_tokens, kl_coef=prof.ppo_kl_coef,
                          missing_eos_penalty=1.0, stop_token="eos", num_sample_generations=0,
                          local_rollout_forward_batch_size=batch)
    start = time.perf_counter()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=None,
                         reward_model=reward_model, value_model=value_model,
                         train_dataset=Dataset.from_dict({"input_ids": ids}),
                         peft_config=lora_config(prof))
    trainer.train()
    stats = [e for e in trainer.state.log_history if "objective/scores" in e]
    metrics = {"last_mean_score": stats[-1]["objective/scores"],
               "last_kl": stats[-1]["objective/kl"]} if stats else {}
    return finish(trainer, "ppo", out, prof, name, prompts, init, start, metrics,
                  reward=str(reward), kl_coef=prof.ppo_kl_coef)


def train_grpo(prompts, out, reward, init=None, model: str | None = None,
               max_steps: int | None = None, profile: str | Profile | None = None,
               num_generations: int = 2) -> TrainResult:
    """GRPO from core TRL with the same reward model: no value model, the baseline is the mean
    reward of a group of samples for the same prompt."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from .data import load_prompts

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    prompts, out = Path(prompts), Path(out)
    items = load_prompts(prompts)
    reward_model, reward_tokenizer = load_reward_model(reward, prof)
    name, policy, tokenizer = _policy(init, model, prof)
    batch = max(num_generations, prof.per_device_batch_size // num_generations * num_generations)
    config = trainer_args(GRPOConfig, prof, out, max_steps or prof.ppo_steps,
                          num_generations=num_generations, max_completion_length=prof.max_new_tokens,
                          beta=prof.ppo_kl_coef)
    config.per_device_train_batch_size = batch
    start = time.perf_counter()
    trainer = GRPOTrainer(model=policy, reward_funcs=reward_model, args=config,
                          train_dataset=Dataset.from_list([{"prompt": i["messages"]} for i in items]),
                          processing_class=tokenizer, reward_processing_classes=reward_tokenizer,
                          peft_config=lora_config(prof))
    trainer.train()
    stats = [e for e in trainer.state.log_history if "reward" in e]
    metrics = {"last_mean_reward": stats[-1]["reward"]} if stats else {}
    return finish(trainer, "grpo", out, prof, name, prompts, init, start, metrics,
                  reward=str(reward), beta=prof.ppo_kl_coef)
