import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "cai_utils", *args], capture_output=True,
                          text=True)


def test_help_lists_subcommands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("info", "validate", "diff", "critique"):
        assert command in result.stdout


def test_info_without_loading():
    result = run("info", "--no-load", "--profile", "ci")
    assert result.returncode == 0, result.stderr
    assert "profile   ci" in result.stdout and "transformers" in result.stdout
    assert "answers and judging in float32, training in float32" in result.stdout  # ci never bf16


def test_info_accepts_the_cpu_stand_ins_of_the_gpu_profiles():
    result = run("info", "--no-load", "--profile", "t4-cpu")
    assert result.returncode == 0, result.stderr
    assert "profile   t4-cpu" in result.stdout and "4-bit True" in result.stdout


@pytest.mark.slow
def test_info_loads_the_default_model():
    result = run("info", "--profile", "ci")
    assert result.returncode == 0, result.stderr
    assert "default model loads" in result.stdout


def test_unknown_profile_is_rejected():
    result = run("info", "--profile", "tpu")
    assert result.returncode == 2 and "invalid choice: 'tpu'" in result.stderr


def test_package_exports_resolve():
    import cai_utils

    for name in cai_utils.__all__:
        assert getattr(cai_utils, name) is not None


def test_every_stage_takes_the_profile_option():
    from cai_utils.cli import build_parser

    parser = build_parser()
    for argv in (["critique", "--constitution", "c", "--prompts", "p", "--out", "o"],
                 ["label", "--constitution", "c", "--prompts", "p", "--out", "o"],
                 ["train", "sft", "--data", "d", "--out", "o"], ["improve", "--constitution", "c", "--out", "o"],
                 ["evaluate", "--out", "o"], ["run", "--out", "o"], ["info"],
                 ["ablate", "--principles", "x", "--out", "o"], ["calibrate", "--constitution", "c"]):
        assert parser.parse_args([*argv, "--profile", "t4-cpu"]).profile == "t4-cpu", argv[0]


def test_ablate_passes_its_seed(monkeypatch):
    from cai_utils import ablation, cli

    seen = {}
    monkeypatch.setattr(ablation, "ablate", lambda *a, **kw: seen.update(kw) or {"variants": {}})
    assert cli.main(["ablate", "--principles", "x", "--out", "o", "--seed", "3"]) == 0
    assert seen["seed"] == 3


def one_pair(folder) -> Path:
    """A preference file of one pair, for commands whose trainer the test replaces."""
    data = folder / "prefs.jsonl"
    turn = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    data.write_text(json.dumps({"id": "p", "prompt": [{"role": "user", "content": "hi"}],
                                "chosen": turn("Hello!"), "rejected": turn("No.")}) + "\n")
    return data


def test_train_passes_its_seed_and_the_dpo_checkpoint_interval(monkeypatch, tmp_path):
    from cai_utils import cli, training

    data = one_pair(tmp_path)
    seen = {}
    result = training.TrainResult("dpo", tmp_path, 2, 1.0, 1, 2, [], {"selected_step": 1})
    monkeypatch.setattr(training, "train_dpo", lambda *a, profile, **kw: seen.update(p=profile) or result)
    argv = ["train", "dpo", "--data", str(data), "--out", str(tmp_path / "o"), "--profile", "ci"]
    assert cli.main([*argv, "--seed", "3", "--select-every", "12"]) == 0
    assert (seen["p"].train_seed, seen["p"].dpo.select_every) == (3, 12)
    assert cli.main([*argv, "--select-every", "0"]) == 0 and seen["p"].dpo.select_every is None
    argv[1] = "sft"  # the interval belongs to DPO: a one-line error, nothing trained
    assert cli.main([*argv, "--select-every", "12"]) != 0


def test_calibrate_takes_the_profiles_share_of_hand_labelled_pairs(monkeypatch, root):
    from cai_utils import cli, judge, models
    from cai_utils import constitution as cons

    seen = []
    monkeypatch.setattr(models, "load_for_inference", lambda name, profile: (None, None))
    monkeypatch.setattr(judge, "LogProbJudge", lambda *a, **kw: None)
    monkeypatch.setattr(judge, "calibrate", lambda j, c, rows: seen.append(len(rows)) or {"bias_towards_A": 0.5})
    general = str(root / "constitutions" / "harmless-general.yaml")
    for extra in ([], ["--limit", "5"], ["--limit", "0"]):
        assert cli.main(["calibrate", "--constitution", general, "--profile", "ci", *extra]) == 0
    total = len(judge.load_calibration(root / "data" / "calibration" / "pairs.jsonl", cons.load(general)))
    assert seen == [12, 5, total] and total > 12  # the ci profile's calibration_pairs is 12


def test_set_changes_the_profile_a_command_runs_with(capsys):
    from cai_utils import cli

    def sft_row(argv):
        assert cli.main(argv) == 0
        return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| sft "))

    plain = sft_row(["plan", "--profile", "cpu"])
    doubled = sft_row(["plan", "--profile", "cpu", "--set", "sft.epochs=1.6", "--set", "max_length=384"])
    steps = lambda row: int(row.split("|")[2].split()[0])  # noqa: E731  "| sft | 290 steps x ..."
    assert steps(doubled) in (2 * steps(plain) - 1, 2 * steps(plain), 2 * steps(plain) + 1)
    assert cli.main(["plan", "--profile", "cpu", "--set", "dpo.betaa=1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "the dpo section has no setting 'betaa' (the settings: cai_utils/profile_schema.py)"


def test_train_passes_set_to_the_trainer(monkeypatch, tmp_path):
    from cai_utils import cli, training

    data = one_pair(tmp_path)
    seen = {}
    result = training.TrainResult("dpo", tmp_path, 2, 1.0, 1, 2, [], {})
    monkeypatch.setattr(training, "train_dpo", lambda *a, profile, **kw: seen.update(p=profile) or result)
    assert cli.main(["train", "dpo", "--data", str(data), "--out", str(tmp_path / "o"), "--profile", "ci",
                     "--set", "dpo.beta=0.3", "--set", "dpo.learning_rate=1e-6", "--seed", "2"]) == 0
    assert (seen["p"].dpo.beta, seen["p"].dpo.learning_rate, seen["p"].train_seed) == (0.3, 1e-6, 2)
    assert seen["p"].name == "ci" and seen["p"].sft == training.get_profile("ci").sft
