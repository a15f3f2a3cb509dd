import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cai_utils import constitution as cons
from cai_utils.data import read_jsonl
from cai_utils.manifest import read_manifest
from cai_utils.judge import LogProbJudge, agreement, judge_pairs, load_calibration
from cai_utils.pairs import balanced, pair_candidates
from cai_utils.preferences import label_stats, preference_record, principles_for

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
    built, tie = preference_record("id1", CONV, "x", "y", verdict, "rule", threshold=0.3)
    assert built["chosen"][0]["content"] == "x" and not tie  # by the rule, never a tie
    assert built["judge"]["judge_agrees"] is False and built["judge"]["p_chosen"] == pytest.approx(0.25)
    assert built["judge"]["agrees_with_rule"] is False and built["judge"]["label_source"] == "rule"
    with pytest.raises(ValueError, match="unknown label source"):
        preference_record("id1", CONV, "x", "y", verdict, "construction", threshold=0.3)


def stage1_record(rid, set_, final, first, category=None, needless=None):
    r = {"id": rid, "set": set_, "category": category, "prompt": CONV, "initial_response": first,
         "completion": [{"role": "assistant", "content": final}]}
    return {**r, "needless_refusal": needless} if needless else r


MIXED = [stage1_record("r1", "red_team", "I can't help with that.", "Strip the wires...", "illegal"),
         stage1_record("r2", "red_team", "same", "same", "weapons"),  # never revised: no pair
         stage1_record("r3", "red_team", "I won't help hurt anyone.", "Use a knife...", "weapons"),
         stage1_record("b1", "borderline", "Run kill -9 PID.", "Run kill -9 PID.", "tech",
                       needless="I can't help with killing."),
         stage1_record("h1", "helpful", "Paris.", "Paris.", "explain",
                       needless="I'm not able to discuss geography."),
         stage1_record("h2", "helpful", "4", "4", "math")]  # no needless refusal: no pair


def test_mix_pairs_refusals_on_harmful_prompts_and_answers_on_benign_ones():
    pairs = {p["id"]: p for p in pair_candidates(MIXED, "mix")}
    assert set(pairs) == {"r1", "r3", "b1", "h1"}
    assert pairs["r1"]["kind"] == "harmful" and pairs["r1"]["x"] == "I can't help with that."
    assert pairs["r1"]["y"] == "Strip the wires..."
    # on a benign prompt the rule prefers the answer, and the refusal is the rejected side
    assert pairs["b1"]["kind"] == "benign" and pairs["b1"]["x"] == "Run kill -9 PID."
    assert pairs["b1"]["y"] == "I can't help with killing."
    only_revisions = pair_candidates(MIXED, "revision")
    assert {p["id"] for p in only_revisions} == {"r1", "r3"}


def test_balanced_takes_half_harmful_half_benign():
    pairs = pair_candidates(MIXED, "mix")
    two = balanced(pairs, 2)
    assert sorted(p["kind"] for p in two) == ["benign", "harmful"]
    assert balanced(pairs, None) == pairs and len(balanced(pairs, 4)) == 4


def test_benign_share_sets_the_pair_mix_and_is_capped_by_what_there_is():
    rows = ([{"kind": "harmful", "category": c, "id": f"h{i}"} for i, c in enumerate("abab" * 5)]
            + [{"kind": "benign", "category": c, "id": f"b{i}"} for i, c in enumerate("xyz" * 4)])
    mix = [p["kind"] for p in balanced(rows, 12, benign_share=0.75)]
    assert mix.count("benign") == 9 and mix.count("harmful") == 3
    # only 12 benign pairs exist: the rest of the 20 are harmful, never a duplicate
    many = balanced(rows, 20, benign_share=0.9)
    assert [p["kind"] for p in many].count("benign") == 12 and len({p["id"] for p in many}) == 20
    assert {p["category"] for p in balanced(rows, 4, benign_share=0.0)} == {"a", "b"}
    with pytest.raises(ValueError):
        balanced(rows, 4, benign_share=1.5)


def test_the_cpu_pair_mix_covers_every_red_teaming_tactic_of_the_shipped_data():
    """The harmful pairs were once all direct requests (stratified by category alone, in file
    order), so DPO never saw a reframed, persistent or multi-turn one and unlearnt exactly
    those refusals."""
    from cai_utils.course_critic import select_course_records, with_needless_refusals
    from cai_utils.pipeline import stage1_items
    from cai_utils.profiles import get_profile

    prof = get_profile("cpu")
    # as run_label does: the benign pairs' rejected answers
    records = with_needless_refusals(select_course_records(GENERAL, stage1_items(prof)))
    pairs = balanced(pair_candidates(records, "mix"), prof.n_pairs, prof.benign_pair_share)
    harmful = [p for p in pairs if p["kind"] == "harmful"]
    assert len(harmful) == round(prof.n_pairs * (1 - prof.benign_pair_share))
    tactics = {r["tactic"] for r in records if r["set"] == "red_team"}
    assert len(tactics) >= 4 and {p["tactic"] for p in harmful} == tactics
    assert {p["category"] for p in harmful} == {r["category"] for r in records if r["set"] == "red_team"}
    # equal shares per tactic (the profile's), or in proportion to the candidates' tactics
    candidates = [p for p in pair_candidates(records, "mix") if p["kind"] == "harmful"]
    shared = [p for p in balanced(pair_candidates(records, "mix"), prof.n_pairs, prof.benign_pair_share,
                                  "proportional") if p["kind"] == "harmful"]
    for tactic in tactics:
        expected = len(shared) * sum(p["tactic"] == tactic for p in candidates) / len(candidates)
        assert abs(sum(p["tactic"] == tactic for p in shared) - expected) <= 1, tactic
    assert [p["tactic"] for p in harmful].count("direct") < [p["tactic"] for p in shared].count("direct")
    # "length": harmful prompts as short as the benign ones (the equal mix's are over twice as long)
    from statistics import median

    from cai_utils.pairs import prompt_chars

    for mode, ratio in (("length", (0.8, 1.25)), ("equal", (2.0, 10.0))):
        mixed = balanced(pair_candidates(records, "mix"), prof.n_pairs, prof.benign_pair_share, mode)
        lengths = {kind: median(prompt_chars(p) for p in mixed if p["kind"] == kind) for kind in ("harmful", "benign")}
        assert ratio[0] <= lengths["harmful"] / lengths["benign"] <= ratio[1], (mode, lengths)
    with pytest.raises(ValueError, match="tactics"):
        balanced(candidates, 4, tactics="uniform")


def test_benign_pairs_are_judged_on_helpfulness_principles_and_harmful_ones_on_their_category():
    benign = principles_for(GENERAL, "b1", "all", kind="benign")
    assert benign and all(p.category == "helpfulness" for p in benign)
    harmful = principles_for(GENERAL, "r3", "all", kind="harmful", category="weapons")
    assert {p.id for p in harmful} == {"no-mass-harm", "no-violence-help"}
    [one] = principles_for(GENERAL, "r3", "sampled", kind="harmful", category="weapons")
    assert one.category == "weapons"


def test_label_stats_report_agreement_with_the_rule_by_kind():
    judge = FakeJudge({"I can't help with that.": 0.9, "Strip the wires...": 0.2,
                       "Run kill -9 PID.": 0.3, "I can't help with killing.": 0.8})
    pairs = [p for p in pair_candidates(MIXED, "mix") if p["id"] in ("r1", "b1")]
    verdicts = judge_pairs(judge, [(p["prompt"], p["x"], p["y"]) for p in pairs],
                           [[GENERAL.principles[0]]] * 2)
    rows = [{**preference_record(p["id"], CONV, p["x"], p["y"], v, "rule", 0.0)[0], "kind": p["kind"]}
            for p, v in zip(pairs, verdicts)]
    stats = label_stats(rows, [])
    # this judge prefers refusals everywhere: it agrees with the rule on harm, not on benign prompts
    assert stats["judge_agrees_with_rule_by_kind"] == {"harmful": 1.0, "benign": 0.0}
    assert stats["judge_agrees_with_rule"] == 0.5 and stats["kinds"] == {"benign": 1, "harmful": 1}


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


def test_label_records_load_with_datasets_and_train_dpo(tmp_path, trains, tiny_run_t4):
    """Pairs of two sampled answers labelled by the log-prob judge (the t4-cpu run's stage 2, the
    GPU profiles' way): each record in TRL's format with the judge's per-principle orders, and the
    file trains TRL's DPOTrainer unchanged."""
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    from cai_utils.models import load_model

    prefs = tiny_run_t4[0] / "prefs.jsonl"
    manifest = read_manifest(prefs)
    assert manifest["complete"] and manifest["candidates"] == "samples" and manifest["label_source"] == "judge"
    assert 0 <= manifest["counts"]["position_consistent"] <= 1  # what `label` prints as position-consistent
    records = read_jsonl(prefs)
    assert len(records) == manifest["counts"]["pairs"] > 0  # the stand-in keeps every pair (tie threshold 0)
    for r in records:
        assert r["chosen"][0]["role"] == "assistant" and r["prompt"][-1]["role"] == "user"
        assert r["judge"]["principle_ids"] and 0 <= r["judge"]["p_chosen"] <= 1
        # p_chosen is the mean of the chosen answer's two orders, as recorded per principle
        orders = [o for o in r["judge"]["orders"].values()]
        mean = sum((o["chosen_as_A"] + o["chosen_as_B"]) / 2 for o in orders) / len(orders)
        assert r["judge"]["p_chosen"] == pytest.approx(mean, abs=2e-4)
        assert r["constitution"]["hash"] == GENERAL.hash and r["judge_model"] == "default"

    dataset = load_dataset("json", data_files=str(prefs), split="train")
    model, tokenizer = load_model("default")
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2,
                       report_to=[], use_cpu=True, gradient_checkpointing=False, save_strategy="no",
                       max_length=256, logging_steps=1)
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trains(trainer, model, steps=1)


@pytest.mark.slow
@pytest.mark.e2e
def test_calibrate_cli_prints_agreement_interval_and_flips(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join((ROOT / "data/calibration/pairs.jsonl").read_text().splitlines(True)[:4]))
    result = run_cli("calibrate", "--constitution", str(CONSTITUTION), "--pairs", str(pairs))
    assert result.returncode == 0, result.stderr
    assert "agreement" in result.stdout and "95% CI" in result.stdout and "flips" in result.stdout


def test_label_where_every_pair_is_a_tie_writes_no_pairs_and_says_so(tmp_path):
    """Under a GPU profile's tie threshold a weak judge can tie every pair; the run must finish
    with 0 pairs (the t4 stand-in found it crashed reading a prefs file never written)."""
    from cai_utils.judge import Verdict
    from cai_utils import preferences

    class CoinFlip:  # a judge that answers 0.5 in both orders
        def __init__(self, *a, **k):
            pass

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(3)))

    class Echo:  # the policy: two canned candidates
        def __init__(self, *a, **k):
            pass

        def chat(self, convs, params, keys=None, desc=""):
            from cai_utils.generation import Completion
            return [Completion(text=f"answer {k}", tokens=2, finished=True) for k in keys]

    out = tmp_path / "prefs.jsonl"
    from cai_utils.profiles import get_profile

    prof = get_profile("ci").replace(candidate_mode="samples", label_source="judge", tie_threshold=0.1)
    import cai_utils.generation as generation
    from unittest import mock
    with mock.patch.object(preferences, "LogProbJudge", CoinFlip), \
            mock.patch.object(generation, "HFGenerator", Echo), \
            mock.patch.object(preferences, "judge_pairs",
                              lambda judge, pairs, sets: [Verdict(0.5, {"p": {"x_as_A": 0.5, "x_as_B": 0.5}}, True)
                                                          for _ in pairs]):
        summary = preferences.run_label(CONSTITUTION, prompts, out, profile=prof, models={"default": (None, None)})
    assert "0 pairs" in summary and "3 ties" in summary
    assert not out.exists() and len(read_jsonl(tmp_path / "prefs.ties.jsonl")) == 3
    assert read_manifest(out)["complete"] and read_manifest(out)["counts"]["pairs"] == 0
