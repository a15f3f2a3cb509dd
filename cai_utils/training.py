"""Stage 3: SFT (LoRA / QLoRA), DPO, a reward model, PPO and GRPO; small builders around TRL.

Every stage reads JSONL records (checked before any model is loaded), trains a LoRA adapter,
and writes to its output folder: the adapter, ``train_config.json``, ``training_log.json``, a
model card naming the constitution and the data, and a manifest. Sizes come from the profile.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .adapters import adapter_base, training_settings, weights_sha256, with_adapter
from .checkpoint_select import keep_chosen, snapshots
from .data import DataError, file_sha256, read_jsonl, write_json_atomic
from .locks import writes_to
from .manifest import read_manifest, write_manifest
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


def load_records(path, stage: str, repeats: dict[str, int] | None = None) -> list[dict]:
    """Training records for a stage, checked before any model loads (one-line DataErrors);
    ``repeats`` applies the SFT mix (``repeat_sets``) while the records still carry their set."""
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
    return [{key: r[key] for key in NEEDS[stage]} for r in repeat_sets(records, repeats or {})]


def lora_config(profile: Profile, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    targets = profile.lora_target_modules
    return LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha,
                      lora_dropout=profile.lora_dropout, task_type=task_type,
                      target_modules=targets if isinstance(targets, str) else list(targets),
                      modules_to_save=["score"] if task_type == "SEQ_CLS" else None)


def steps_for(n_records: int, epochs: float | None, fixed: int, profile: Profile) -> int:
    """Optimizer steps: ``epochs`` passes over ``n_records`` at the profile's effective batch,
    or the ``fixed`` count when epochs is None.

    >>> from cai_utils.profiles import PROFILES
    >>> steps_for(278, 1.0, 20, PROFILES["cpu"].replace(per_device_batch_size=2))
    139
    >>> steps_for(278, None, 20, PROFILES["cpu"])
    20
    """
    if epochs is None:
        return fixed
    from .devices import processes

    # under ``accelerate launch`` every process takes its own batch per step
    batch = profile.per_device_batch_size * profile.gradient_accumulation_steps * processes()[1]
    return max(1, math.ceil(epochs * n_records / batch))


def trainer_args(config_class, profile: Profile, out: Path, steps: int, learning_rate: float,
                 **extra):
    """TRL config for a profile. Gradient checkpointing only with CUDA: on this course's CPU it
    made DPO, reward and PPO steps 6-7x slower (TRL 1.x turns it on by default). The model's
    weights load in the profile's ``dtype``; bf16 here is autocast (mixed precision). Under
    ``TQDM_DISABLE`` the trainers print their logs instead of drawing a progress bar: in a
    notebook, transformers' bar sends a display update per step, and under nbval that flood made
    the kernel's end-of-cell message arrive too late (notebook 07 under ``t4-cpu``)."""
    import torch

    from .devices import uses_cpu_bf16

    cuda = torch.cuda.is_available()
    return config_class(
        output_dir=str(out), max_steps=steps, learning_rate=learning_rate,
        per_device_train_batch_size=profile.per_device_batch_size,
        gradient_accumulation_steps=profile.gradient_accumulation_steps,
        gradient_checkpointing=profile.gradient_checkpointing and cuda,
        fp16=cuda and profile.dtype == "float16",
        # bf16 autocast: on Ampere+ GPUs, and on a CPU with native bf16 under ``cpu_bf16``
        bf16=(cuda and profile.dtype == "bfloat16") or (not cuda and uses_cpu_bf16(profile, "cpu")),
        use_cpu=not cuda, logging_steps=1, save_strategy="no", report_to=[], seed=profile.train_seed,
        disable_tqdm=True if os.environ.get("TQDM_DISABLE") else None, **extra)


def fp32_trainable(trainer):
    """Keep the weights a trainer updates in fp32, and return the trainer.

    TRL 1.12 casts every trainable parameter of a quantized (4-bit) model to bf16 (the QLoRA
    paper's choice, in its SFT, DPO, reward and GRPO trainers). Two things then break: fp16
    AMP's gradient scaler has no kernel for bf16 gradients (the ``t4`` profile crashes at the
    first optimizer step, pytorch#127176), and a bf16 reward head meets fp32 or fp16 hidden
    states. fp32 LoRA weights and head are what PEFT makes anyway; they cost a few MB.
    Call it after the trainer is built and before ``train()`` (the optimizer is made there).
    """
    import torch

    for param in trainer.model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return trainer


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


def _provenance(data: Path) -> dict:
    """What the data was made from, read from its manifest (for the model card)."""
    manifest = read_manifest(data) or {}
    return {"data": str(data), "data_sha256": file_sha256(data),
            "constitution": manifest.get("constitution"), "data_model": manifest.get("model"),
            "data_manifest": manifest.get("file")}


def launch_of(trainer) -> dict:
    """How many processes trained, and how they talked: ``{"processes": 1, "distributed": "NO",
    "backend": None}`` in a plain run, ``MULTI_GPU``/``nccl`` under ``accelerate launch`` on GPUs,
    ``MULTI_CPU``/``gloo`` on CPUs."""
    state = trainer.accelerator.state
    return {"processes": state.num_processes, "distributed": state.distributed_type.value,
            "backend": getattr(state, "backend", None)}


def finish(trainer, stage: str, out: Path, profile: Profile, model_name: str, data: Path,
           init, start: float, metrics: dict | None = None, **config) -> TrainResult:
    """Save the adapter, its config, log, model card and manifest; return what happened.
    Under ``accelerate launch`` every process calls ``save_model`` (ZeRO-3 gathers the weights
    there) and only the main process writes."""
    from .devices import is_main_process

    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    model = trainer.model
    size = lambda p: getattr(p, "ds_numel", p.numel())  # noqa: E731 (ZeRO-3 shards hold 0 here)
    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    total = sum(size(p) for p in model.parameters())
    seconds = round(time.perf_counter() - start, 1)
    provenance = _provenance(data)
    from .models import stored_path

    settings = {"stage": stage, "model": stored_path(model_name, out),
                "init": stored_path(str(init), out) if init else None,
                "profile": profile.name, "trainable_params": trainable, "total_params": total,
                "launch": launch_of(trainer), **config,
                "profile_settings": dataclasses.asdict(profile)}
    result = TrainResult(stage, out, trainer.state.global_step, seconds, trainable, total,
                         trainer.state.log_history, metrics or {})
    if not is_main_process():
        return result
    write_json_atomic(out / "train_config.json", settings)
    write_json_atomic(out / "training_log.json", trainer.state.log_history)
    from .model_card import model_card

    model_card(stage, model_name, profile.name, trainer.state.global_step, seconds, provenance, init,
               trainable, total, metrics).save(out / "README.md")
    trained_with = profile.replace(load_in_4bit=config.get("load_in_4bit", profile.load_in_4bit))
    write_manifest(out / "adapter.jsonl", complete=True, stage=stage, model=model_name,
                   profile=profile.name, steps=result.steps, seconds=seconds, metrics=metrics or {},
                   settings=training_settings(trained_with, stage),
                   init_sha256=weights_sha256(init), reward_sha256=weights_sha256(config.get("reward")),
                   **provenance)
    return result


def repeat_sets(records: list[dict], repeats: dict[str, int]) -> list[dict]:
    """The SFT mix: each record of a prompt set named in ``repeats`` appears that many times
    (the borderline-but-safe answers are the contrast examples that teach where a refusal does
    not belong, and there are few of them); the order is shuffled by the trainer.

    >>> rows = [{"set": "red_team"}, {"set": "borderline"}, {"set": "helpful"}]
    >>> [r["set"] for r in repeat_sets(rows, {"borderline": 3})]
    ['red_team', 'borderline', 'borderline', 'borderline', 'helpful']
    """
    if any(k < 1 for k in repeats.values()):
        raise ValueError(f"repeats must be at least 1: {repeats}")
    return [r for r in records for _ in range(repeats.get(r.get("set"), 1))]


@writes_to("out")
def train_sft(data, out, model: str = DEFAULT_MODEL, init=None, load_in_4bit: bool | None = None,
              max_steps: int | None = None, profile: str | Profile | None = None) -> TrainResult:
    """Supervised fine-tuning on stage-1 records (prompt-completion: loss on the revision only)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    prof = get_profile(profile)
    data, out = Path(data), Path(out)
    records = load_records(data, "sft", dict(prof.sft.repeat))
    four_bit = prof.load_in_4bit if load_in_4bit is None else load_in_4bit
    start = time.perf_counter()
    base, tokenizer = base_model(model, prof, four_bit)
    steps = max_steps or steps_for(len(records), prof.sft.epochs, prof.sft.steps, prof)
    trainer = SFTTrainer(
        model=with_adapter(base, init), processing_class=tokenizer,
        args=trainer_args(SFTConfig, prof, out, steps, prof.sft.learning_rate,
                          max_length=prof.max_length, lr_scheduler_type=prof.sft.lr_scheduler,
                          warmup_steps=prof.sft.warmup),
        train_dataset=Dataset.from_list(records),
        peft_config=None if init else lora_config(prof))
    fp32_trainable(trainer).train()
    return finish(trainer, "sft", out, prof, model, data, init, start, load_in_4bit=four_bit,
                  records=len(records), learning_rate=prof.sft.learning_rate,
                  lr_scheduler=prof.sft.lr_scheduler, warmup=prof.sft.warmup,
                  repeats=dict(prof.sft.repeat))


def first_tokens(dataset, n: int):
    """A tokenised preference set with each answer cut to its first ``n`` tokens (no end token
    added), so the preference falls on the opening where a reply refuses or complies.

    >>> from datasets import Dataset
    >>> d = Dataset.from_list([{"prompt_ids": [1], "chosen_ids": [2, 3, 4], "rejected_ids": [5]}])
    >>> first_tokens(d, 2)[0]
    {'prompt_ids': [1], 'chosen_ids': [2, 3], 'rejected_ids': [5]}
    """
    return dataset.map(lambda e: {"chosen_ids": e["chosen_ids"][:n], "rejected_ids": e["rejected_ids"][:n]})


@writes_to("out")
def train_dpo(data, out, model: str | None = None, init=None, load_in_4bit: bool | None = None,
              max_steps: int | None = None, profile: str | Profile | None = None) -> TrainResult:
    """DPO on stage-2 pairs, from the SFT adapter; TRL copies that adapter into a frozen
    reference, so the reference is the SFT model without a second copy of the weights."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from .devices import processes

    prof = get_profile(profile)
    if prof.dpo.select_every and processes()[1] > 1:
        raise DataError("choosing a DPO checkpoint on validation (dpo.select_every) runs in one "
                        "process: set dpo.select_every=0 under accelerate launch")
    data, out = Path(data), Path(out)
    records = load_records(data, "dpo")
    model = model or (adapter_base(init) if init else DEFAULT_MODEL)
    four_bit = prof.load_in_4bit if load_in_4bit is None else load_in_4bit
    start = time.perf_counter()
    base, tokenizer = base_model(model, prof, four_bit)
    steps = max_steps or steps_for(len(records), prof.dpo.epochs, prof.dpo.steps, prof)
    # early stopping on the validation prompts: checkpoints, one kept (checkpoint_select)
    callbacks = snapshots(out, steps, model, init, prof) if prof.dpo.select_every else []
    trainer = DPOTrainer(
        model=with_adapter(base, init), processing_class=tokenizer,
        args=trainer_args(DPOConfig, prof, out, steps,
                          prof.dpo.learning_rate, beta=prof.dpo.beta, max_length=prof.max_length,
                          loss_type=list(prof.dpo.loss_types),
                          loss_weights=list(prof.dpo.loss_weights) if prof.dpo.loss_weights else None),
        train_dataset=Dataset.from_list(records),
        peft_config=None if init else lora_config(prof), callbacks=callbacks)
    if prof.dpo.completion_tokens:
        trainer.train_dataset = first_tokens(trainer.train_dataset, prof.dpo.completion_tokens)
    fp32_trainable(trainer).train()
    rewards = [e for e in trainer.state.log_history if "rewards/accuracies" in e]
    metrics = {"last_reward_accuracy": rewards[-1]["rewards/accuracies"],
               "last_reward_margin": rewards[-1]["rewards/margins"]} if rewards else {}
    if callbacks:
        metrics.update(keep_chosen(trainer, out, prof))
    return finish(trainer, "dpo", out, prof, model, data, init, start, metrics,
                  load_in_4bit=four_bit, beta=prof.dpo.beta, records=len(records),
                  learning_rate=prof.dpo.learning_rate, loss_type=list(prof.dpo.loss_types),
                  loss_weights=prof.dpo.loss_weights, completion_tokens=prof.dpo.completion_tokens)
