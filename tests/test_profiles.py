import dataclasses

import pytest

from cai_utils.pairs import PAIR_TACTICS
from cai_utils.profile_schema import STAGES
from cai_utils.profiles import PROFILES, get_profile


def test_five_profiles_with_distinct_sizes():
    assert set(PROFILES) == {"ci", "cpu", "t4-quick", "t4", "a100"}
    from cai_utils.data import load_prompts, project_root

    red_team_train = len(load_prompts(project_root() / "data/prompts/red_team_train.jsonl"))  # None: all
    sizes = [PROFILES[p].n_red_team or red_team_train for p in ("ci", "cpu", "t4")]
    assert sizes[0] < sizes[1] <= sizes[2] <= red_team_train
    from cai_utils.training import steps_for

    def seen(p, n=300):  # SFT examples seen on n records: passes or fixed steps, times the batch
        prof = PROFILES[p]
        return steps_for(n, prof.sft.epochs, prof.sft.steps, prof) * prof.per_device_batch_size * prof.gradient_accumulation_steps
    assert seen("ci") < seen("cpu") < seen("t4") <= seen("a100")


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_is_complete(name):
    profile = PROFILES[name]
    assert profile.name == name
    for field in dataclasses.fields(profile):
        if field.name not in ("critic_model", "judge_model", "lm_eval_limit", "calibration_pairs",
                              "n_red_team", "n_helpful", "n_borderline", "guard_model", "lm_eval_batch_size",
                              "lm_eval_models"):
            assert getattr(profile, field.name) is not None, field.name
    for stage in STAGES:  # each trainer's section: every setting but the optional ones
        section = getattr(profile, stage)
        assert type(section).__name__.lower() == stage
        for field in dataclasses.fields(section):
            if field.name not in ("epochs", "loss_weights", "select_every", "completion_tokens"):
                assert getattr(section, field.name) is not None, (stage, field.name)
    assert profile.candidate_mode in ("mix", "revision", "samples")
    assert profile.label_source in ("judge", "rule")
    assert profile.pair_tactics in PAIR_TACTICS
    assert profile.critic == "course" or profile.critic == "self" or "/" in profile.critic
    # DPO moves the policy far more per step than SFT: its learning rate is lower
    assert profile.dpo.learning_rate < profile.sft.learning_rate
    assert profile.judge_mode in ("sampled", "all")
    # a per-task limit names a task the profile runs (t4-quick once kept t4's MMLU limit without MMLU)
    assert {t for t, _ in profile.lm_eval_task_limits} <= set(profile.lm_eval_tasks)
    assert profile.dtype in ("float32", "float16", "bfloat16")


def test_gpu_profiles_use_hub_models_and_right_dtypes():
    t4, a100 = PROFILES["t4"], PROFILES["a100"]
    assert t4.load_in_4bit and t4.dtype == "float16"  # a T4 has no bf16
    assert a100.dtype == "bfloat16"
    assert "/" in t4.policy_model and "/" in a100.policy_model
    assert PROFILES["cpu"].gradient_checkpointing is False  # 6-7x slower on CPU


def test_cpu_profiles_use_the_offline_default():
    assert PROFILES["ci"].policy_model == PROFILES["cpu"].policy_model == "default"


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("CAI_PROFILE", "t4")
    assert get_profile().name == "t4"
    assert get_profile("ci").name == "ci"  # an explicit name wins


def test_default_without_env_is_cpu_here(monkeypatch):
    monkeypatch.delenv("CAI_PROFILE", raising=False)
    monkeypatch.setattr("cai_utils.profiles.has_cuda", lambda: False)
    assert get_profile().name == "cpu"
    monkeypatch.setattr("cai_utils.profiles.has_cuda", lambda: True)
    assert get_profile().name == "t4-quick"  # Colab's free tier; CAI_PROFILE=t4 for the full sizes


def test_unknown_profile_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("CAI_PROFILE", "tpu")
    with pytest.raises(ValueError, match="unknown profile 'tpu': choose one of ci, cpu, t4, a100, t4-quick, t4-cpu, a100-cpu, t4-quick-cpu$"):
        get_profile()
    with pytest.raises(ValueError, match="unknown profile 'cpu-cpu'"):
        get_profile("cpu-cpu")  # only GPU profiles have a CPU stand-in


def test_replace_and_roles():
    profile = PROFILES["ci"].replace(judge_model="other/judge")
    assert profile.model_for("judge") == "other/judge"
    assert profile.model_for("critic") == "default"
    with pytest.raises(ValueError, match="unknown profile field"):
        PROFILES["ci"].replace(batchsize=3)
    with pytest.raises(ValueError, match="unknown model role"):
        profile.model_for("reviewer")


@pytest.mark.parametrize("name", ["t4-quick", "t4", "a100"])
def test_gpu_profiles_size_training_in_passes_over_the_shipped_data(name, root):
    """Fixed step counts meant ~14 passes over the SFT data on t4 and ~136 on a100, reported as
    a large run (13 item 12): every stage now counts passes, so steps follow the files."""
    from cai_utils.data import load_prompts
    from cai_utils.training import steps_for

    prof = get_profile(name)
    prompts = root / "data" / "prompts"
    n_sft = sum(len(load_prompts(prompts / f"{s}_train.jsonl")) for s in ("red_team", "helpful", "borderline"))
    per_step = prof.per_device_batch_size * prof.gradient_accumulation_steps
    for epochs, fixed in ((prof.sft.epochs, prof.sft.steps), (prof.dpo.epochs, prof.dpo.steps),
                          (prof.reward.epochs, prof.reward.steps), (prof.ppo.epochs, prof.ppo.steps)):
        passes = steps_for(n_sft, epochs, fixed, prof) * per_step / n_sft
        assert passes <= 4.5, (name, passes)
    sizes = [(prof.n_red_team, "red_team"), (prof.n_helpful, "helpful"), (prof.n_borderline, "borderline")]
    for limit, name in sizes:  # the whole file, or a sample smaller than it (never capped silently)
        assert limit is None or limit < len(load_prompts(prompts / f"{name}_train.jsonl"))


def test_t4_quick_fits_a_free_colab_session_by_the_estimate():
    """t4-quick takes every branch t4 takes at sizes the estimate puts well inside one free
    session (under an hour), and t4 well above it; the GPU memory fits a T4's 15 GB."""
    from cai_utils.profiles import BRANCH_FIELDS
    from cai_utils.sizing import DEVICES, plan

    quick, full = PROFILES["t4-quick"], PROFILES["t4"]
    assert all(getattr(quick, f) == getattr(full, f) for f in BRANCH_FIELDS if f != "rounds")
    minutes = {p.name: sum(r["seconds"] for r in plan(p, DEVICES["t4"])) / 60 for p in (quick, full)}
    assert minutes["t4-quick"] < 60 < 2 * minutes["t4-quick"] < minutes["t4"], minutes
    assert max(r.get("memory_gb", 0) for r in plan(quick, DEVICES["t4"])) < DEVICES["t4"].memory_gb


def test_bf16_on_cpu_only_where_the_cpu_has_native_bf16(monkeypatch, tmp_path):
    """bf16 is ~4x faster per matmul on a CPU with AVX512-BF16 and far slower where it is
    emulated, so ``cpu_bf16`` asks the CPU; the weights a trainer updates stay fp32."""
    from cai_utils import devices
    from cai_utils.training import trainer_args
    from trl import SFTConfig

    fast = PROFILES["cpu"].replace(cpu_bf16=True)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert devices.inference_dtype(fast, device="cpu") == "bfloat16"
    assert devices.inference_dtype(fast, device="cuda") == fast.dtype  # GPU profiles say theirs
    assert trainer_args(SFTConfig, fast, tmp_path, 2, 1e-4).bf16  # autocast; the model loads in fp32
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert devices.inference_dtype(fast, device="cpu") == "float32"
    assert not trainer_args(SFTConfig, fast, tmp_path, 2, 1e-4).bf16
    assert devices.inference_dtype(PROFILES["t4"], device="cuda") == "float16"
    assert devices.inference_dtype(PROFILES["ci"]) == "float32"  # tests compare exact greedy texts


def test_the_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    from cai_utils import devices

    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 fma\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        info if path == "/proc/cpuinfo" else path, *a, **k))
    assert devices.cpu_has_bf16()
    info.write_text("processor: 0\nflags\t\t: fpu avx2 avx512f fma\n")
    assert not devices.cpu_has_bf16()


@pytest.mark.parametrize("gpu", ["t4", "a100"])
def test_a_cpu_stand_in_takes_every_branch_of_its_gpu_profile_at_ci_sizes(gpu):
    """The GPU profiles cannot run here; their stand-ins take the same code paths on CPU."""
    from cai_utils.profiles import BRANCH_FIELDS, profile_names

    real, ci, stand = PROFILES[gpu], PROFILES["ci"], get_profile(f"{gpu}-cpu")
    assert f"{gpu}-cpu" in profile_names() and stand.name == f"{gpu}-cpu"
    assert all(getattr(stand, f) == getattr(real, f) for f in BRANCH_FIELDS)
    assert stand.policy_model == "default" and stand.dtype == "float32"
    assert (stand.n_red_team, stand.sft.steps, stand.eval_prompts) == (ci.n_red_team, ci.sft.steps, ci.eval_prompts)
    assert not stand.guard_model and not stand.xstest  # no hub here
    # the branches that differ from ci are really taken
    assert stand.candidate_mode == "samples" != ci.candidate_mode and stand.label_source == "judge"
    assert stand.critic == "self" and stand.rounds > 1 and stand.lora_target_modules == "all-linear"
    assert stand.load_in_4bit == (gpu == "t4")


def test_stage_sections_change_one_setting_and_keep_the_rest():
    cpu = PROFILES["cpu"]
    changed = cpu.replace(dpo={"beta": 0.3}, max_length=512)
    assert (changed.dpo.beta, changed.max_length) == (0.3, 512)
    assert changed.dpo.replace(beta=cpu.dpo.beta) == cpu.dpo and changed.sft == cpu.sft
    with pytest.raises(ValueError, match="unknown DPO setting"):
        cpu.replace(dpo={"betta": 0.3})


@pytest.mark.parametrize("assignment, message", [
    ("dpo.betaa=1", "the dpo section has no setting 'betaa'"),
    ("foo.beta=1", "unknown profile section 'foo'"),
    ("max_length=abc", "max_length='abc': expected int"),
    ("eval_prompts=0.5", "expected int"),
    ("rl=maybe", "expected bool"),
    ("sft=1", "a profile has no setting 'sft'"),
    ("dpo.beta", "write KEY=VALUE"),
])
def test_set_names_the_bad_setting_in_one_line(assignment, message):
    from cai_utils.profile_schema import with_settings

    with pytest.raises(ValueError, match=message) as info:
        with_settings(PROFILES["cpu"], [assignment])
    assert "\n" not in str(info.value)


def test_set_parses_each_kind_of_value():
    from cai_utils.profile_schema import with_settings

    cpu = PROFILES["cpu"]
    got = with_settings(cpu, ["rl=true", "sft.repeat=[['helpful', 2]]", "dpo.loss_types=['sigmoid']",
                              "dpo.select_every=None", "critic=self", "sft.learning_rate=1e-4", "reward.epochs=2"])
    assert got.rl is True and got.sft.repeat == (("helpful", 2),) and got.dpo.loss_types == ("sigmoid",)
    assert got.dpo.select_every is None and got.critic == "self" and got.sft.learning_rate == 1e-4
    assert got.reward.epochs == 2.0 and isinstance(got.reward.epochs, float)
    assert got.sft.epochs == cpu.sft.epochs and got.dpo.learning_rate == cpu.dpo.learning_rate  # the rest kept
    hash(got)  # still frozen and hashable
