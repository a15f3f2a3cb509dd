"""The model card every trained adapter is saved with: ``README.md`` holding the YAML metadata
the Hugging Face hub reads (base model, library, pipeline, tags) above a plain account of how
the adapter was made: stage, profile, steps, the constitution (name, version, hash), the data
and its hash, what training started from, and the stage's metrics. Built with
``huggingface_hub.ModelCard``, so ``ModelCard.load(folder / "README.md")`` reads it back.
"""

from __future__ import annotations

import re
from pathlib import Path

from .models import adapter_chain, display_name
from .offline_model import DEFAULT_MODEL_ID
from .profiles import DEFAULT_MODEL

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def hub_base_model(model_name: str) -> str | None:
    """The hub id of the model under every adapter, when it has one (the hub links the card to
    it): the offline default is SmolLM2-135M-Instruct; a local folder has none.

    >>> hub_base_model("default")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> hub_base_model("Qwen/Qwen2.5-1.5B-Instruct")
    'Qwen/Qwen2.5-1.5B-Instruct'
    >>> hub_base_model("/tmp/a-local-model") is None
    True
    """
    base, _ = adapter_chain(model_name)
    if base == DEFAULT_MODEL:
        return DEFAULT_MODEL_ID
    return base if HUB_ID.match(base) and not Path(base).exists() else None


def model_card(stage: str, model_name: str, profile_name: str, steps: int, seconds: float,
               provenance: dict, init, trainable: int, total: int, metrics: dict):
    """The card as a ``huggingface_hub.ModelCard`` (``.save(path)`` writes it)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(base_model=hub_base_model(model_name), library_name="peft",
                         pipeline_tag="text-classification" if stage == "reward" else "text-generation",
                         tags=["cai_utils", "constitutional-ai", stage, "lora", "trl"])
    constitution = provenance.get("constitution") or {}
    body = [f"# {stage.upper()} adapter for {display_name(model_name)}", "",
            f"Trained with `cai_utils` ({stage}, profile `{profile_name}`, {steps} steps, {seconds}s).", "",
            f"- constitution: {constitution.get('name')} {constitution.get('version')} "
            f"(sha256 {constitution.get('hash')})",
            f"- data: `{provenance['data']}` (sha256 {provenance['data_sha256'][:16]}...), "
            f"manifest `{provenance['data_manifest']}`",
            f"- started from: {init or 'the base model'}",
            f"- trainable parameters: {trainable:,} of {total:,}",
            *[f"- {k}: {v}" for k, v in (metrics or {}).items()]]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
