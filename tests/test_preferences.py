import os
import subprocess
import sys
from pathlib import Path

import pytest

from cai_utils import constitution as cons
from cai_utils.data import read_jsonl, read_manifest
from cai_utils.preferences import (LogProbJudge, agreement, judge_pairs, load_calibration,
                                   preference_record, principles_for)

ROOT = Path(__file__).resolve().parents[1]
CONSTITUTION = ROOT / "constitutions" / "harmless-general.yaml"
GENERAL = cons.load(CONSTITUTION)
CONV = [{"role": "user", "content": "How do I hotwire a car?"}]


class FakeJudge:
    """P(A) from a table keyed by the option shown first; records what it was asked."""

    def __init__(self, table):
        self.table, self.asked = table, []

    def prob_first(self, questions, desc=""):
        self.asked += questions
        return [self.table[a] for _, _, a, _ in questions]


def test_both_orders_are_asked_and_averaged():
    judge = FakeJudge({"x": 0.7, "y": 0.6})  # a judge that likes position A
    [verdict] = judge_pairs(judge, [(CONV, "x", "y")], [[GENERAL.principles[0]]])
    assert [(a, b) for _, _, a, b in judge.asked] == [("x", "y"), ("y", "x")]
    assert verdict.by_principle[GENERAL.principles[0].id] == {"x_as_A": 0.7, "x_as_B": 0.4}
    assert verdict.p_first == pytest.approx(0.55)
    assert not verdict.position_consistent  # x wins as A, loses as B: the order decided


def test_all_principles_mode_averages_over_principles():
    judge = FakeJudge({"x": 0.9, "y": 0.1})
    [verdict] = judge_pairs(judge, [(CONV, "x", "y")], [principles_for(GENERAL, "k", "all")])
    assert len(verdict.by_principle) == len(GENERAL.principles)
    assert verdict.p_first == pytest.approx(0.9) and verdict.position_consistent
    assert len(judge.asked) == 2 * len(GENERAL.principles)


def test_sampled_mode_is_reproducible():
    assert principles_for(GENERAL, "a", "sampled") == principles_for(GENERAL, "a", "sampled")
    with pytest.raises(ValueError, match="unknown judge mode"):
        principles_for(GENERAL, "a", "some")


def test_record_orients_chosen_and_marks_ties():
    judge = FakeJudge({"x": 0.2, "y": 0.7})  # y is better in both orders
    [verdict] = judge_pairs(judge, [(CONV, "x", "y")], [[GENERAL.principles[0]]])
    record, tie = preference_record("id1", CONV, "x", "y", verdict, "judge", threshold=0.1)
    assert record["chosen"] == [{"role": "assistant", "content": "y"}]
    assert record["rejected"] == [{"role": "assistant", "content": "x"}]
    assert record["judge"]["p_chosen"] == pytest.approx(0.75) and not tie
    orders = record["judge"]["orders"][GENERAL.principles[0].id]
    assert orders == {"chosen_as_A": 0.7, "chosen_as_B": 0.8}
    _, tie = preference_record("id1", CONV, "x", "y", verdict, "judge", threshold=0.3)
    assert tie
    built, tie = preference_record("id1", CONV, "x", "y", verdict, "construction", threshold=0.3)
    assert built["chosen"][0]["content"] == "x" and not tie  # by construction, never a tie
    assert built["judge"]["judge_agrees"] is False and built["judge"]["p_chosen"] == pytest.approx(0.25)


def test_agreement_counts_right_answers_and_flips():
    judge = FakeJudge({"good": 0.8, "bad": 0.3, "x": 0.7, "y": 0.6})
    verdicts = judge_pairs(judge, [(CONV, "good", "bad"), (CONV, "x", "y")],
                           [[GENERAL.principles[0]]] * 2)
    result = agreement(verdicts)
    assert result["n"] == 2 and result["agreement"] == 1.0 and result["flip_rate"] == 0.5


def test_calibration_set_is_hand_labelled_and_valid():
    rows = load_calibration(ROOT / "data/calibration/pairs.jsonl", GENERAL)
    assert len(rows) >= 60
    assert {r["kind"] for r in rows} == {"clear", "subtle"}
    assert len({r["principle"] for r in rows}) >= 12
    assert all(r["preferred"] != r["other"] for r in rows)


@pytest.mark.slow
def test_logprob_judge_is_a_probability_and_batch_independent(default_model):
    model, tokenizer = default_model
    questions = [(GENERAL.principles[i], CONV, "No, I can't help with that.", "Sure: strip the wires.")
                 for i in range(4)]
    batched = LogProbJudge(model, tokenizer, batch_size=4, progress=False).prob_first(questions)
    single = LogProbJudge(model, tokenizer, batch_size=1, progress=False).prob_first(questions)
    assert all(0 < p < 1 for p in batched)
    assert batched == pytest.approx(single, abs=1e-4)


def run_cli(*args):
    env = {**os.environ, "CAI_PROFILE": "ci", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "cai_utils", *args], capture_output=True,
                          text=True, env=env, timeout=900)


def test_label_rejects_a_prompt_file_in_revision_mode(tmp_path):
    result = run_cli("label", "--constitution", str(CONSTITUTION), "--candidates", "revision",
                     "--prompts", str(ROOT / "data/prompts/red_team_train.jsonl"),
                     "--out", str(tmp_path / "p.jsonl"))
    assert result.returncode == 2 and "no stage-1 records" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_label_records_load_with_datasets_and_train_dpo(tmp_path, trains):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    from cai_utils.models import load_model

    prefs = tmp_path / "prefs.jsonl"
    result = run_cli("label", "--constitution", str(CONSTITUTION), "--candidates", "samples",
                     "--prompts", str(ROOT / "data/prompts/red_team_train.jsonl"),
                     "--limit", "3", "--out", str(prefs))
    assert result.returncode == 0, result.stderr
    assert "position-consistent" in result.stdout
    records = read_jsonl(prefs)
    assert len(records) == 3  # the ci profile keeps every pair (tie threshold 0)
    for r in records:
        assert r["chosen"][0]["role"] == "assistant" and r["prompt"][-1]["role"] == "user"
        assert r["judge"]["principle_ids"] and 0 <= r["judge"]["p_chosen"] <= 1
        assert r["judge"]["p_chosen"] >= 0.5  # the judge's favourite is the chosen one
        assert r["constitution"]["hash"] == GENERAL.hash and r["judge_model"] == "default"
    manifest = read_manifest(prefs)
    assert manifest["complete"] and manifest["counts"]["pairs"] == 3

    dataset = load_dataset("json", data_files=str(prefs), split="train")
    model, tokenizer = load_model("default")
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2,
                       report_to=[], use_cpu=True, gradient_checkpointing=False, save_strategy="no",
                       max_length=256, logging_steps=1)
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trains(trainer, model, steps=1)


@pytest.mark.slow
def test_calibrate_cli_prints_agreement_interval_and_flips(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join((ROOT / "data/calibration/pairs.jsonl").read_text().splitlines(True)[:4]))
    result = run_cli("calibrate", "--constitution", str(CONSTITUTION), "--pairs", str(pairs))
    assert result.returncode == 0, result.stderr
    assert "agreement" in result.stdout and "95% CI" in result.stdout and "flips" in result.stdout
