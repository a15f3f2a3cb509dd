"""The sizing estimate (`cai_utils.sizing`): its counts checked against the real model, PEFT and
bitsandbytes on this CPU; its plan against the profile it reads. How close its seconds land to
a measured run is a benchmark (benchmarks/sizing.py), not a test."""

import pytest

from cai_utils import sizing
from cai_utils.profiles import PROFILES, stand_in


@pytest.mark.slow
def test_the_default_models_shape_gives_its_parameter_count(default_model):
    model, _ = default_model
    real = sum(p.numel() for p in model.parameters())
    assert abs(sizing.SHAPES["default"].params - real) / real < 0.001  # norms left out: 0.03%


@pytest.mark.parametrize("name", ["cpu", "t4-cpu"])  # attention only at r=8; every linear layer at r=16
def test_lora_parameters_match_what_peft_trains(default_model, name):
    from peft import get_peft_model

    from cai_utils.models import load_model
    from cai_utils.training import lora_config

    prof = PROFILES["cpu"] if name == "cpu" else stand_in(name)
    model, _ = load_model("default")
    peft_model = get_peft_model(model, lora_config(prof))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert sizing.lora_params(sizing.SHAPES["default"], prof) == trainable


@pytest.mark.slow
def test_four_bit_weights_match_what_bitsandbytes_stores():
    from cai_utils.models import load_model

    model, _ = load_model("default", load_in_4bit=True, device="cpu")
    real = model.get_memory_footprint() / 1e9
    estimate = sizing.weight_gb(sizing.SHAPES["default"], True, str(model.dtype).removeprefix("torch."))
    assert abs(estimate - real) / real < 0.1, (estimate, real)
    assert sizing.weight_gb(sizing.SHAPES["default"], False, "float32") > 2 * real


def test_the_plan_follows_the_profile():
    cpu = PROFILES["cpu"]
    rows = {r["stage"]: r for r in sizing.plan(cpu, sizing.DEVICES["cpu"])}
    assert "reward" not in rows and "ppo" not in rows  # rl=False in the demo
    from cai_utils.training import steps_for

    records = sizing._counts(cpu)["records"]  # every training prompt, borderline ones twice
    assert rows["sft"]["work"].startswith(f"{steps_for(records, cpu.sft.epochs, cpu.sft.steps, cpu)} steps x 2 ")
    twice = {r["stage"]: r for r in sizing.plan(cpu.replace(sft={"epochs": 2 * cpu.sft.epochs}), sizing.DEVICES["cpu"])}
    assert twice["sft"]["seconds"] == pytest.approx(2 * rows["sft"]["seconds"], rel=0.01)
    self_critic = {r["stage"]: r for r in sizing.plan(cpu.replace(critic="self"), sizing.DEVICES["cpu"])}
    assert self_critic["critique"]["seconds"] > 20 * rows["critique"]["seconds"]  # the course critic is copied
    t4 = {r["stage"] for r in sizing.plan(PROFILES["t4"], sizing.DEVICES["t4"])}
    assert {"reward", "grpo"} <= t4  # a 4-bit base trains GRPO: PPO's value model does not fit
    a100 = {r["stage"]: r for r in sizing.plan(PROFILES["a100"], sizing.DEVICES["a100"])}
    assert a100["ppo"]["memory_gb"] > 3 * sizing.weight_gb(sizing.SHAPES[PROFILES["a100"].policy_model], False, "bfloat16")


def test_a_model_without_a_shape_is_one_clear_error():
    with pytest.raises(ValueError, match="no size on record for 'org/unknown'"):
        sizing.plan(PROFILES["t4"].replace(policy_model="org/unknown"), sizing.DEVICES["t4"])


def test_cli_plan_prints_the_estimate(capsys):
    from cai_utils.cli import main

    assert main(["plan", "--profile", "t4-quick"]) == 0
    out = capsys.readouterr().out
    assert "t4-quick" in out and "NVIDIA T4" in out and "not a measurement" in out and "**total**" in out
    for device in sizing.DEVICES:  # every device sizing knows is a choice, and nothing else
        assert main(["plan", "--profile", "ci", "--device", device]) == 0
        assert sizing.DEVICES[device].name in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["plan", "--device", "tpu"])


def test_each_notebook_says_how_long_its_own_stages_take():
    """Notebooks 02-07 print this line before their work; notebook 06 trains the reward model and
    PPO even where `run` leaves them out (the cpu demo), so its line counts them."""
    cpu = PROFILES["cpu"]
    line = sizing.estimate_line(cpu, ["reward", "ppo", "grpo"])
    assert "estimate for cpu" in line and "reward" in line and "ppo" in line and "grpo" not in line
    assert "sft" not in sizing.estimate_line(cpu, ["critique"])
    assert "memory" not in sizing.estimate_line(cpu, ["critique"])
    gb = next(r["memory_gb"] for r in sizing.plan(PROFILES["t4"], sizing.DEVICES["t4"]) if r["stage"] == "dpo")
    assert f"peak memory dpo {gb:.1f} GB" in sizing.estimate_line(PROFILES["t4"], ["dpo"])
    import json
    from cai_utils.data import project_root

    for path in sorted((project_root() / "notebooks").glob("0[2-7]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        assert any("sizing.estimate_line(profile" in "".join(c["source"]) for c in cells), path.name


def test_lm_eval_fits_each_gpu_profiles_card_and_would_not_at_the_generation_batch():
    """lm-eval keeps a full-vocabulary log-softmax for every position of every row (Qwen's
    vocabulary: 151,936), longest requests first: at the generation batch (32 on t4) the first
    MMLU batch alone would need more than a T4 has, so each GPU profile sets its own."""
    for name, device in (("t4-quick", "t4"), ("t4", "t4"), ("a100", "a100")):
        answers = next(r for r in sizing.plan(PROFILES[name], sizing.DEVICES[device]) if r["stage"] == "answers")
        assert answers["memory_gb"] < sizing.DEVICES[device].memory_gb, (name, answers)
    t4 = PROFILES["t4"]
    unsized = t4.replace(lm_eval_batch_size=None)
    assert sizing.lm_eval_memory_gb(sizing.SHAPES[t4.policy_model], unsized) > sizing.DEVICES["t4"].memory_gb
