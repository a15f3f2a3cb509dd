"""Trained adapter folders on disk: what a folder was trained on, whether it is complete and
current, how far training moved it, and loading or merging it onto its base.

Every ``train`` stage writes one such folder (see ``training.finish``); pipelines, the report and
the notebooks read them through these functions.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import DataError, file_sha256
from .manifest import read_manifest


def adapter_base(init: str | Path) -> str:
    """The model name an adapter of ours was trained on."""
    from .models import resolve_stored

    config = Path(init) / "train_config.json"
    if not config.is_file():
        raise DataError(f"{init}: not an adapter folder from `train` (no train_config.json)")
    return resolve_stored(json.loads(config.read_text())["model"], init)


def with_adapter(model, init: str | Path | None, trainable: bool = True):
    """Wrap a model with an adapter saved earlier (trainable by default)."""
    if init is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(init), is_trainable=trainable)


def save_merged(out: str | Path) -> Path:
    """Save a causal-LM adapter folder's base with the adapter merged in, to ``out/merged``."""
    from .models import load_model

    model, tokenizer = load_model(str(out))
    target = Path(out) / "merged"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def weights_sha256(folder) -> str | None:
    """The hash of an adapter folder's weights (None for no folder)."""
    if folder is None:
        return None
    weights = Path(folder) / "adapter_model.safetensors"
    return file_sha256(weights) if weights.is_file() else None


# The profile's settings every trainer's result depends on, beside its own section
# (``profile.sft``, ``profile.dpo``, ...): a rerun with other values trains again.
SHARED_TRAINING = ("policy_model", "load_in_4bit", "dtype", "cpu_bf16", "lora_r", "lora_alpha",
                   "lora_dropout", "lora_target_modules", "per_device_batch_size",
                   "gradient_accumulation_steps", "max_length", "train_seed")


def training_settings(profile, stage: str) -> dict:
    """What a ``stage`` adapter (sft, dpo, reward, ppo, grpo) trained under ``profile`` is
    trained with, as JSON values: the stage's section and the shared training settings.

    >>> from cai_utils.profiles import get_profile
    >>> s = training_settings(get_profile("cpu").replace(dpo={"beta": 0.3}), "dpo")
    >>> s["dpo"]["beta"], s["lora_r"], "sft" in s
    (0.3, 8, False)
    """
    import dataclasses

    values = {name: getattr(profile, name) for name in (*SHARED_TRAINING, stage)}
    return json.loads(json.dumps({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                                  for k, v in values.items()}))


def is_current(out: str | Path, data: str | Path | None, init: str | Path | None = None,
               reward: str | Path | None = None, settings: dict | None = None) -> bool:
    """True when ``out`` holds a complete adapter trained on this very ``data`` file (any data
    when ``data`` is None) and, when given, from this very ``init`` adapter against this very
    ``reward`` model, with these ``settings`` (``training_settings``): a retrained SFT model,
    new data or a changed setting (``run --set dpo.beta=0.3``) makes the adapter stale, and a
    pipeline retrains it. A folder trained before settings were recorded counts as current."""
    manifest = read_manifest(Path(out) / "adapter.jsonl")
    if not (manifest and manifest.get("complete")):
        return False
    return ((data is None or manifest.get("data_sha256") == file_sha256(data))
            and manifest.get("init_sha256") == weights_sha256(init)
            and manifest.get("reward_sha256") == weights_sha256(reward)
            and (settings is None or manifest.get("settings", settings) == settings))


def adapter_delta(folder: str | Path, start: str | Path | None = None) -> float:
    """How far training moved an adapter: the L2 norm of its LoRA weights minus those of
    ``start`` (an adapter it continued from, e.g. DPO from SFT), over the tensors both have.
    With no start, the norm of the LoRA B matrices, which PEFT initialises to zero: 0.0 means
    the adapter never trained."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(folder) / "adapter_model.safetensors"))
    if start is None:
        return float(sum(v.float().pow(2).sum() for k, v in weights.items() if "lora_B" in k) ** 0.5)
    before = load_file(str(Path(start) / "adapter_model.safetensors"))
    shared = [k for k in weights if k in before and "lora_" in k]
    if not shared:
        raise ValueError(f"{folder} and {start} share no LoRA weights: not an adapter continued from the other")
    return float(sum((weights[k].float() - before[k].float()).pow(2).sum() for k in shared) ** 0.5)


def is_done(out: str | Path) -> bool:
    """True when a stage's folder holds a complete adapter (so a pipeline can skip it)."""
    manifest = read_manifest(Path(out) / "adapter.jsonl")
    return bool(manifest and manifest.get("complete"))
