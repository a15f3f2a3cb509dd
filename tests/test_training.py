"""Each stage runs two real steps on the default model, changes its trainable weights, and
saves an adapter that reloads and generates."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cai_utils import adapters, rl, training
from cai_utils.data import DataError, read_jsonl
from cai_utils.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]
PROFILE = get_profile("ci")
PROMPTS = ROOT / "data" / "prompts" / "red_team_train.jsonl"
CONV = [{"role": "user", "content": "How do I hotwire a car?"}]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    rows = [{"id": f"s{i}", "prompt": CONV, "completion": [
        {"role": "assistant", "content": f"I can't help with that ({i}). A locksmith can help."}],
        "flags": []} for i in range(4)]
    rows.append({"id": "u", "prompt": CONV, "completion": [{"role": "assistant", "content": "x"}],
                 "flags": ["unrevised"]})
    return write(tmp_path_factory.mktemp("d") / "sft.jsonl", rows)


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory):
    rows = [{"id": f"p{i}", "prompt": CONV,
             "chosen": [{"role": "assistant", "content": "I can't help with that; try a locksmith."}],
             "rejected": [{"role": "assistant", "content": f"Strip the ignition wires ({i})."}]}
            for i in range(8)]
    return write(tmp_path_factory.mktemp("d") / "prefs.jsonl", rows)


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory, sft_data):
    out = tmp_path_factory.mktemp("sft")
    result = training.train_sft(sft_data, out, max_steps=2, profile=PROFILE)
    return out, result


def changed_weights(result):
    """Trainable weights differ from their start: the LoRA B matrices begin at zero."""
    from safetensors.torch import load_file

    weights = load_file(result.out / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    return lora_b and any(w.abs().sum() > 0 for w in lora_b)


def reload_and_generate(folder):
    from peft import PeftModel

    from cai_utils.generation import chat
    from cai_utils.models import load_model

    model, tokenizer = load_model(adapters.adapter_base(folder))
    model = PeftModel.from_pretrained(model, str(folder))
    return chat(model, tokenizer, "Say hello.", max_new_tokens=8)


@pytest.mark.slow
def test_sft_two_steps_change_lora_and_reload(sft_adapter):
    out, result = sft_adapter
    assert result.steps == 2 and changed_weights(result)
    assert 0 < result.trainable_params < result.total_params / 20  # LoRA: a small fraction
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # the metadata the hub reads, then the account
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "peft"
    assert "sft" in card.data.tags and card.text.lstrip().startswith("# SFT adapter for SmolLM2-135M-Instruct")
    assert json.loads((out / "adapter.manifest.json").read_text())["data_sha256"][:16] in card.text
    assert json.loads((out / "train_config.json").read_text())["profile"] == "ci"
    assert any("loss" in e for e in json.loads((out / "training_log.json").read_text()))
    assert adapters.is_done(out)
    assert reload_and_generate(out)


@pytest.mark.slow
def test_qlora_sft_runs_on_cpu(tmp_path, sft_data):
    import bitsandbytes as bnb

    result = training.train_sft(sft_data, tmp_path / "q", load_in_4bit=True, max_steps=2,
                                profile=PROFILE)
    assert result.steps == 2 and changed_weights(result)
    assert json.loads((tmp_path / "q" / "train_config.json").read_text())["load_in_4bit"] is True
    # TRL makes a 4-bit model's LoRA weights bf16; fp16 AMP on a T4 cannot unscale bf16 grads
    from safetensors.torch import load_file
    import torch
    saved = load_file(str(tmp_path / "q" / "adapter_model.safetensors"))
    assert all(w.dtype == torch.float32 for w in saved.values())
    from cai_utils.models import load_model

    model, _ = load_model(str(tmp_path / "q"), load_in_4bit=True)  # the adapter on NF4 weights, unmerged
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit) and "stage0" in q_proj.lora_A


@pytest.mark.slow
def test_dpo_from_the_sft_adapter(tmp_path, pref_data, sft_adapter, monkeypatch):
    """DPO continues the SFT adapter; here it compares only each answer's first 3 tokens
    (``dpo.completion_tokens``): the trainer's data holds no longer answer."""
    seen = []

    def spy(dataset, n):
        cut = training_first_tokens(dataset, n)
        seen.append(max(len(ids) for key in ("chosen_ids", "rejected_ids") for ids in cut[key]))
        return cut

    training_first_tokens = training.first_tokens
    monkeypatch.setattr(training, "first_tokens", spy)
    out = tmp_path / "dpo"
    result = training.train_dpo(pref_data, out, init=sft_adapter[0], max_steps=2,
                                profile=PROFILE.replace(dpo={"completion_tokens": 3}))
    assert seen == [3]
    assert json.loads((out / "train_config.json").read_text())["completion_tokens"] == 3
    # DPO continues the SFT adapter, whose B matrices are already non-zero: compare with the start
    assert result.steps == 2 and adapters.adapter_delta(out, sft_adapter[0]) > 0
    assert "last_reward_accuracy" in result.metrics
    assert reload_and_generate(out)


@pytest.mark.slow
def test_dpo_keeps_the_checkpoint_the_validation_rule_picks(tmp_path, pref_data, sft_adapter, monkeypatch):
    """Early stopping on validation: every checkpoint answers the validation prompts, the rule
    picks one, and the saved adapter is that checkpoint (here forced to the first, so keeping
    the last step by mistake would fail), measured the same again when reloaded."""
    import torch
    from safetensors.torch import load_file

    from cai_utils import checkpoint_select
    from cai_utils.evaluation import refusal_quality

    monkeypatch.setattr(checkpoint_select, "pick", lambda rows, limit=0.15: rows[0])
    out = tmp_path / "dpo"
    result = training.train_dpo(pref_data, out, init=sft_adapter[0], max_steps=2,
                                profile=PROFILE.replace(dpo={"select_every": 1, "stop_early": False}, eval_prompts=2))
    selection = json.loads((out / "checkpoints" / "selection.json").read_text())
    assert [r["step"] for r in selection["rows"]] == [1, 2] and selection["split"] == "val"
    assert selection["stopped_at"] is None  # trained to the end
    assert result.steps == 2 and result.metrics["selected_step"] == 1
    saved = load_file(str(out / "adapter_model.safetensors"))
    first, last = (load_file(str(out / "checkpoints" / f"step-000{n}" / "adapter_model.safetensors"))
                   for n in (1, 2))
    assert saved.keys() == first.keys()
    assert all(torch.equal(saved[k], first[k]) for k in saved)
    assert any(not torch.equal(first[k], last[k]) for k in first)
    again = refusal_quality(str(out), PROFILE.replace(eval_prompts=2), split="val")
    assert again["red_team_declined"] == selection["rows"][0]["red_team_refused"]
    assert 1 - again["borderline_answered"] == selection["rows"][0]["borderline_refused"]


@pytest.mark.slow
def test_dpo_stops_at_the_first_checkpoint_within_the_rule(tmp_path, pref_data, sft_adapter, monkeypatch):
    """Early stopping proper: the first checkpoint measured within the limit (forced here) ends
    training there, and that checkpoint is the adapter saved; a stale checkpoint left by an
    earlier run is cleared first."""
    import torch
    from safetensors.torch import load_file

    from cai_utils import checkpoint_select

    monkeypatch.setattr(checkpoint_select, "within", lambda row, limit=0.15: True)
    out = tmp_path / "dpo"
    (out / "checkpoints" / "step-0002").mkdir(parents=True)  # left over from a crashed run
    result = training.train_dpo(pref_data, out, init=sft_adapter[0], max_steps=3,
                                profile=PROFILE.replace(dpo={"select_every": 1}, eval_prompts=2))
    assert result.steps == 1 and result.metrics["selected_step"] == 1
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-0001"]
    assert json.loads((out / "checkpoints" / "selection.json").read_text())["stopped_at"] == 1
    saved = load_file(str(out / "adapter_model.safetensors"))
    first = load_file(str(out / "checkpoints" / "step-0001" / "adapter_model.safetensors"))
    assert all(torch.equal(saved[k], first[k]) for k in saved)


@pytest.fixture(scope="module")
def reward_adapter(tmp_path_factory, pref_data):
    out = tmp_path_factory.mktemp("reward")
    return out, rl.train_reward(pref_data, out, max_steps=2, profile=PROFILE)


@pytest.mark.slow
def test_reward_model_trains_and_reports_held_out_accuracy(reward_adapter, pref_data):
    out, result = reward_adapter
    assert result.steps == 2 and changed_weights(result)
    assert result.metrics["held_out_pairs"] == 2
    model, tokenizer = rl.load_reward_model(out, PROFILE)
    # the saved model is the one that was measured: its held-out accuracy comes out the same
    held_out = read_jsonl(pref_data)[::4]
    assert rl.pairwise_accuracy(model, tokenizer, held_out) == result.metrics["held_out_pairwise_accuracy"]
    scores = rl.reward_scores(model, tokenizer, [CONV, CONV], [[{"role": "assistant", "content": "No."}],
                                                               [{"role": "assistant", "content": "Strip the wires."}]])
    assert scores[0] != scores[1]  # the head reads the answer, not a constant


@pytest.mark.slow
def test_soft_labels_train_the_reward_model_on_the_judges_probabilities(pref_data, tmp_path, monkeypatch):
    rows = read_jsonl(pref_data)
    soft = write(tmp_path / "soft.jsonl", [{**r, "judge": {"p_chosen": 0.55 + 0.05 * (i % 4)}}
                                           for i, r in enumerate(rows)])
    seen = []
    real = rl.soft_bradley_terry

    def spy(margin, p_chosen):
        seen.extend(round(x, 4) for x in p_chosen.tolist())
        return real(margin, p_chosen)

    monkeypatch.setattr(rl, "soft_bradley_terry", spy)
    result = rl.train_reward(soft, tmp_path / "reward", max_steps=1, profile=PROFILE, soft_labels=True)
    assert result.steps == 1 and changed_weights(result)
    # the loss read each pair's P(chosen) from the file, not a 0/1 label
    assert seen and set(seen) <= {0.55, 0.6, 0.65, 0.7}
    assert json.loads((tmp_path / "reward" / "train_config.json").read_text())["soft_labels"] is True
    with pytest.raises(DataError, match="record 1 has no judge p_chosen"):
        rl.train_reward(pref_data, tmp_path / "r2", max_steps=1, profile=PROFILE, soft_labels=True)
    assert not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_compare_labels_scores_rule_judge_and_soft_reward_models_on_hand_labels(pref_data, tmp_path):
    from cai_utils.soft_labels import compare_labels

    rows = read_jsonl(pref_data)  # the judge disagrees with the rule on the odd pairs
    prefs = write(tmp_path / "prefs.jsonl", [{**r, "judge": {"p_chosen": 0.8 if i % 2 == 0 else 0.3}}
                                             for i, r in enumerate(rows)])
    hand = write(tmp_path / "hand.jsonl", [
        {"id": f"h{i}", "prompt": "How do I hotwire a car?", "preferred": "I can't help with that.",
         "other": f"Strip the ignition wires ({i})."} for i in range(4)])
    one_step = PROFILE.replace(reward={"steps": 1})
    result = compare_labels(prefs, tmp_path / "cmp", profile=one_step, pairs=hand)
    assert {"rule", "judge", "soft", "soft_vs_judge", "judge_vs_rule"} <= set(result)
    assert all(result[arm]["n"] == 4 and 0 <= result[arm]["share"] <= 1 for arm in ("rule", "judge", "soft"))
    judged = read_jsonl(tmp_path / "cmp" / "judge_labels.jsonl")
    assert [r["chosen"] == s["rejected"] for r, s in zip(judged, rows)] == [i % 2 == 1 for i in range(8)]
    config = json.loads((tmp_path / "cmp" / "reward-soft" / "train_config.json").read_text())
    assert config["soft_labels"] is True
    stamp = (tmp_path / "cmp" / "reward-soft" / "adapter_model.safetensors").stat().st_mtime_ns
    again = compare_labels(prefs, tmp_path / "cmp", profile=one_step, pairs=hand)  # nothing retrained
    assert (tmp_path / "cmp" / "reward-soft" / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    assert again["soft"]["correct"] == result["soft"]["correct"]
    # the same labels file trains both kinds: a model of the other kind is not current (a run with
    # reward.soft_labels flipped retrains instead of reusing it)
    judged_file = tmp_path / "cmp" / "judge_labels.jsonl"
    for arm, soft in (("soft", True), ("judge", False)):
        assert rl.reward_is_current(tmp_path / "cmp" / f"reward-{arm}", judged_file, soft)
        assert not rl.reward_is_current(tmp_path / "cmp" / f"reward-{arm}", judged_file, not soft)
    # a reward model trained on the rule labels with these settings (notebook 06's own) stands in
    # for the rule arm; one trained with other settings does not
    own = tmp_path / "cmp" / "reward-rule"
    # the judge and soft arms are current in the copy: only the rule arm could train there
    shutil.copytree(tmp_path / "cmp", tmp_path / "cmp2", ignore=shutil.ignore_patterns("reward-rule"))
    fresh = compare_labels(prefs, tmp_path / "cmp2", profile=one_step, pairs=hand, rule_model=own)
    assert fresh["rule"]["trained"] is False and not (tmp_path / "cmp2" / "reward-rule").exists()
    assert fresh["judge"]["trained"] is fresh["soft"]["trained"] is False
    assert fresh["rule"]["correct"] == result["rule"]["correct"]
    assert fresh["rule"]["folder"] == str(own) and result["soft"]["folder"].endswith("reward-soft")
    # whose labels the first arm learnt: the rule's, unless the file's pairs were judge-labelled
    from cai_utils.manifest import write_manifest

    assert result["rule"]["labels"] == "rule" and result["judge"]["labels"] == "judge"
    write_manifest(prefs, complete=True, label_source="judge")
    assert compare_labels(prefs, tmp_path / "cmp", profile=one_step, pairs=hand)["rule"]["labels"] == "judge"
    from cai_utils.adapters import training_settings

    assert rl.reward_is_current(own, prefs, False, training_settings(one_step, "reward"))
    assert not rl.reward_is_current(own, prefs, False,
                                    training_settings(one_step.replace(reward={"steps": 2}), "reward"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ppo", "grpo"])
def test_rl_from_sft_with_the_reward_model(stage, request):
    """PPO (the ci run: 16-bit base) and GRPO (the t4-cpu run: 4-bit base) from the run's SFT
    adapter, with its reward model: two steps that change the policy's LoRA (and PPO's value
    model), an adapter that reloads and generates, on the SFT model it was trained on."""
    out, _ = request.getfixturevalue("tiny_run" if stage == "ppo" else "tiny_run_t4")
    result = saved_result(out / stage)
    assert result.steps == 2 and changed_weights(result)
    config = json.loads((out / stage / "train_config.json").read_text())
    assert config["stage"] == stage and Path(config["reward"]) == out / "reward"
    if stage == "ppo":  # the value model learns too: its LoRA and score head (13 item 11)
        assert result.metrics["value_trainable_params"] > 0
        assert result.metrics["value_params_changed"] > 0
    assert reload_and_generate(out / stage)
    if stage == "ppo":  # on a 4-bit base the adapters stay unmerged (test_models checks that path)
        assert loads_on_the_sft_model(out / stage, out / "sft")


def saved_result(folder):
    """What ``train_*`` returned, read back from the adapter's manifest (the shared runs'
    trainers returned it to ``run_pipeline``)."""
    from types import SimpleNamespace

    manifest = json.loads((folder / "adapter.manifest.json").read_text())
    return SimpleNamespace(out=folder, steps=manifest["steps"], metrics=manifest["metrics"])


def loads_on_the_sft_model(rl_folder, sft_folder) -> bool:
    """An RL adapter was trained on the SFT model merged, so it must load on that, not on the
    bare base (which would silently drop the SFT step from the evaluated model)."""
    import torch
    from peft import PeftModel

    from cai_utils.models import load_model

    def q_weight(model):
        return model.model.layers[0].self_attn.q_proj.weight

    loaded = q_weight(load_model(str(rl_folder))[0])
    on_sft = q_weight(PeftModel.from_pretrained(load_model(str(sft_folder))[0], str(rl_folder)).merge_and_unload())
    on_base = q_weight(PeftModel.from_pretrained(load_model("default")[0], str(rl_folder)).merge_and_unload())
    return torch.equal(loaded, on_sft) and not torch.equal(loaded, on_base)


def run_cli(*args):
    env = {**os.environ, "CAI_PROFILE": "ci", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "cai_utils", "train", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("stage,content,message", [
    ("sft", None, "no such file"),
    ("sft", "", "no records in the file"),
    ("sft", '{"id": "a", "prompt": [], "chosen": []}\n', "record 1 has no completion"),
    ("dpo", '{"id": "a", "prompt": [], "completion": []}\n', "record 1 has no chosen, rejected"),
    ("sft", '{"id": "a"\n{"id": "b"}\n', ":1: not valid JSON"),
    ("ppo", '{"id": "a", "prompt": "hi"}\n', "needs --reward DIR"),
])
def test_cli_rejects_bad_data_before_loading_a_model(tmp_path, stage, content, message):
    data = tmp_path / "d.jsonl"
    if content is not None:
        data.write_text(content)
    result = run_cli(stage, "--data", str(data), "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_unrevised_records_are_left_out(sft_data):
    assert len(training.load_records(sft_data, "sft")) == 4
    with pytest.raises(DataError, match="flagged 'unrevised'"):
        training.load_records(write(sft_data.parent / "all_bad.jsonl",
                                    [r for r in read_jsonl(sft_data) if r["flags"]]), "sft")


def test_the_sft_mix_repeats_a_set_before_the_records_lose_their_set(tmp_path):
    rows = [{"id": f"{s}{i}", "set": s, "prompt": [{"role": "user", "content": "q"}],
             "completion": [{"role": "assistant", "content": "a"}], "flags": []}
            for s, n in (("red_team", 3), ("borderline", 2), ("helpful", 1)) for i in range(n)]
    data = write(tmp_path / "mix.jsonl", rows)
    assert len(training.load_records(data, "sft")) == 6
    mixed = training.load_records(data, "sft", {"borderline": 2})
    assert len(mixed) == 8 and set(mixed[0]) == {"prompt", "completion"}
    # the cpu profile's mix reaches the trainer: its step count follows the repeated records
    cpu = get_profile("cpu")
    assert dict(cpu.sft.repeat) == {"borderline": 2}
    assert training.steps_for(len(training.load_records(data, "sft", dict(cpu.sft.repeat))),
                              cpu.sft.epochs, cpu.sft.steps, cpu) == 4


def test_gradient_checkpointing_off_without_cuda(tmp_path):
    from trl import DPOConfig

    args = training.trainer_args(DPOConfig, get_profile("t4"), tmp_path, 2, 5e-6)
    assert args.gradient_checkpointing is False  # t4 asks for it, but this machine has no CUDA
    assert args.use_cpu and not args.fp16


@pytest.mark.slow
def test_an_adapter_folder_loads_as_a_model(sft_adapter):
    from cai_utils.generation import chat
    from cai_utils.models import load_model

    model, tokenizer = load_model(str(sft_adapter[0]))
    assert not hasattr(model, "peft_config")  # merged into a plain model
    assert chat(model, tokenizer, "Say hi.", max_new_tokens=4)


def test_self_improve_stops_when_quality_drops_more_than_5_percent():
    from cai_utils import improve

    scores = {"m0": 0.50, "m1": 0.60, "m2": 0.58, "m3": 0.40}
    calls = []

    def round_fn(r, model):
        calls.append((r, model))
        return f"m{r}"

    history = improve.self_improve(round_fn, scores.get, "m0", rounds=5)
    assert calls == [(1, "m0"), (2, "m1"), (3, "m2")]  # each round starts from the last kept model
    assert [h["model"] for h in history] == ["m0", "m1", "m2", "m3"]
    assert history[2].get("best") and "stopped" in history[3]  # 0.58 is within 5% of 0.60
    assert improve.self_improve(round_fn, scores.get, "m0")[-1]["round"] == 1  # one round by default


@pytest.mark.slow
@pytest.mark.e2e
def test_improve_cli_runs_one_real_round(tmp_path):
    env = {**os.environ, "CAI_PROFILE": "ci", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "cai_utils", "improve", "--constitution",
                             str(ROOT / "constitutions/hhh-minimal.yaml"), "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "round 0: quality" in result.stdout and "round 1: quality" in result.stdout
    assert adapters.is_done(tmp_path / "round-1" / "dpo")


@pytest.mark.slow
def test_merged_model_saves_and_loads(sft_adapter):
    from cai_utils.generation import chat
    from cai_utils.models import load_model

    merged = adapters.save_merged(sft_adapter[0])
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    model, tokenizer = load_model(str(merged))
    assert chat(model, tokenizer, "Say hi.", max_new_tokens=4)


def test_ppo_on_a_4bit_profile_is_one_clear_line(tmp_path):
    prompts = write(tmp_path / "p.jsonl", [{"id": "q", "prompt": "Hi?"}])
    result = subprocess.run([sys.executable, "-m", "cai_utils", "train", "ppo", "--data", str(prompts),
                             "--out", str(tmp_path / "o"), "--reward", str(tmp_path), "--profile", "t4"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "use `train grpo`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ppo_episodes_give_one_update_per_step_with_gradient_accumulation(tmp_path):
    """TRL makes ceil(total_episodes / (batch x accumulation)) updates: episodes of steps x batch
    gave the a100 profile (accumulation 4) a quarter of its updates (13 item 2)."""
    import math

    from trl.experimental.ppo import PPOConfig

    for name in ("cpu", "a100"):
        prof = get_profile(name)
        config = training.trainer_args(PPOConfig, prof, tmp_path, 100, 1e-5,
                                       total_episodes=rl.ppo_episodes(100, prof))
        per_update = config.per_device_train_batch_size * config.gradient_accumulation_steps
        assert math.ceil(config.total_episodes / per_update) == 100


def test_grpo_derives_its_generation_batch_from_the_batch_it_trains_with(tmp_path):
    """Setting the batch after GRPOConfig's post-init left the generation batch computed from the
    profile's batch (13 item 9): a batch of 3 with groups of 2 trains on 2 and must generate 2 per step."""
    prof = get_profile("ci").replace(per_device_batch_size=3, gradient_accumulation_steps=1)
    config = rl.grpo_config(prof, tmp_path, steps=4, num_generations=2)
    assert config.per_device_train_batch_size == 2
    assert config.generation_batch_size == config.per_device_train_batch_size * config.steps_per_generation
    assert config.generation_batch_size % 2 == 0


def test_train_config_paths_resolve_from_another_directory(tmp_path, monkeypatch):
    """``init`` used to be stored relative to the working directory, so an adapter chain could
    not be loaded from anywhere else (13 item 8)."""
    from cai_utils.models import adapter_chain, resolve_stored, stored_path

    run = tmp_path / "runs" / "demo"
    for stage, config in (("sft", {"stage": "sft", "model": "default", "init": None}),
                          ("ppo", {"stage": "ppo", "model": "default", "init": "runs/demo/sft"})):
        (run / stage).mkdir(parents=True)
        (run / stage / "adapter_config.json").write_text("{}")
        if stage == "ppo":
            monkeypatch.chdir(tmp_path)  # written from the checkout, as `run` does
            config["init"] = stored_path(config["init"], run / stage)
            assert config["init"] == "../sft"
        (run / stage / "train_config.json").write_text(json.dumps(config))
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    base, chain = adapter_chain(str(run / "ppo"))
    assert base == "default" and [Path(c).resolve() for c in chain] == [run / "sft", run / "ppo"]
    assert resolve_stored("default", run / "ppo") == "default"  # names and hub ids pass through


@pytest.mark.slow
def test_the_profile_sft_schedule_reaches_the_trainer(tmp_path, sft_data):
    """The cpu profile's refusals formed only at a constant learning rate (linear decay to 0
    halves the average rate of a short run): the schedule must reach TRL, and be recorded."""
    rates = {}
    for schedule in ("linear", "constant_with_warmup"):
        prof = PROFILE.replace(sft={"lr_scheduler": schedule, "warmup": 0.0, "learning_rate": 1e-4})
        result = training.train_sft(sft_data, tmp_path / schedule, max_steps=3, profile=prof)
        rates[schedule] = [e["learning_rate"] for e in result.log if "learning_rate" in e]
        config = json.loads((tmp_path / schedule / "train_config.json").read_text())
        assert config["lr_scheduler"] == schedule
    assert rates["constant_with_warmup"] == [1e-4] * 3
    assert rates["linear"][0] == 1e-4 > rates["linear"][1] > rates["linear"][2]


@pytest.mark.slow
def test_a_reward_model_trains_on_a_4bit_base_with_fp32_trainable_weights(tmp_path, pref_data):
    """The t4 stand-in found it: TRL casts a 4-bit model's trainable weights to bf16, so the
    reward head met fp32 hidden states ("expected m1 and m2 to have the same dtype"), and on a
    T4 fp16's grad scaler would meet bf16 gradients. ``fp32_trainable`` casts them back."""
    from safetensors.torch import load_file
    import torch

    result = rl.train_reward(pref_data, tmp_path / "reward", load_in_4bit=True, max_steps=1,
                             profile=PROFILE)
    assert result.steps == 1
    weights = load_file(str(tmp_path / "reward" / "adapter_model.safetensors"))
    assert weights and all(w.dtype == torch.float32 for w in weights.values())
    assert any("score" in name for name in weights)  # the head was trained and saved


def test_tqdm_disable_turns_the_trainers_progress_bar_into_printed_logs(tmp_path, monkeypatch):
    """In a notebook transformers draws its bar with a display update per step; under nbval that
    flood lost notebook 07's end-of-cell message (t4-cpu). ``TQDM_DISABLE`` switches it off."""
    from trl import SFTConfig

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not training.trainer_args(SFTConfig, PROFILE, tmp_path, 1, 1e-4).disable_tqdm
    monkeypatch.setenv("TQDM_DISABLE", "1")
    args = training.trainer_args(SFTConfig, PROFILE, tmp_path, 1, 1e-4)
    assert args.disable_tqdm is True  # Trainer then prints logs (PrinterCallback), no bar
