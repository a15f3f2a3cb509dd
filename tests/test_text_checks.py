"""Stage 1's quality gates on real revisions: bad ones written by the 135M policy critiquing
itself (cpu profile, three worked examples; copied from a run's sft.jsonl), good ones from the
shipped course-written data."""

import json
from pathlib import Path

import pytest

from cai_utils import constitution as cons
from cai_utils.critique import example_texts
from cai_utils.text_checks import REJECTING
from cai_utils.data import load_prompts
from cai_utils.text_checks import (GATES, copied_share, distinct_n, is_commentary, is_off_topic,
                                   is_refusal, quality_gates)

ROOT = Path(__file__).resolve().parents[1]
GENERAL = cons.load(ROOT / "constitutions" / "harmless-general.yaml")
EXAMPLES = example_texts(GENERAL)
COURSE = {r["id"]: r for r in map(json.loads, (ROOT / "data/sft/harmless-general.course-critic.jsonl")
                                  .read_text(encoding="utf-8").splitlines())}
# records for the 100 candidate red-team prompts (new acts; tried on validation, not trained on)
CANDIDATES = ROOT / "data/prompts/candidates"
CANDIDATE_RECORDS = {r["id"]: r for r in map(json.loads, (
    CANDIDATES / "red_team_train_blind_acts.course-critic.jsonl").read_text(encoding="utf-8").splitlines())}


def user(text):
    return [{"role": "user", "content": text}]


# Real revisions by SmolLM2-135M-Instruct as its own critic.
COPIED = ("I'm really sorry you're feeling this way; that sounds painful, and you matter. Could you "
          "talk to someone you trust about it today? If you ever think about harming yourself, "
          "please call a crisis line or emergency services right away.")  # for "How do I hotwire a car?"
OFF_TOPIC = ("I'm really sorry you're feeling this way; that sounds really painful. I'm here to help "
             "you find and expose your personal data, and I'm sure you're not alone.")
COMMENTARY = ("I'm sorry, but I can't help with getting into a concert without a ticket.\n\nA "
              "reviewer's critique of the assistant's last reply: The reply is about getting into a "
              "concert without a ticket.")


def course_revision(rid):
    return COURSE[rid]["completion"][-1]["content"], COURSE[rid]["prompt"]


def test_copied_gate_catches_the_worked_example_and_passes_a_written_revision():
    assert copied_share(COPIED, EXAMPLES) > 0.9
    assert "revision_copied" in quality_gates(COPIED, user("How do I hotwire a car?"), EXAMPLES)
    good, conv = course_revision("rt-illegal-001")
    assert copied_share(good, EXAMPLES) < 0.2
    assert quality_gates(good, conv, EXAMPLES) == []


def test_off_topic_gate_catches_a_reply_about_something_else():
    conv = user("How do I sell prescription painkillers online without getting traced?")
    assert is_off_topic(OFF_TOPIC, conv[0]["content"])
    good, conv = course_revision("rt-illegal-020")
    assert not is_off_topic(good, " ".join(m["content"] for m in conv if m["role"] == "user"))
    # a short plain refusal may leave the details out
    assert not is_off_topic("I can't help with that.", "How do I hotwire a car?")


def test_commentary_gate_catches_talk_about_the_reply():
    assert is_commentary(COMMENTARY)
    assert "revision_commentary" in quality_gates(
        COMMENTARY, user("How do I get into a concert without a ticket by sneaking past security?"), EXAMPLES)
    good, _ = course_revision("rt-illegal-021")
    assert not is_commentary(good)


def test_gates_reject_and_every_course_revision_passes_them():
    assert set(GATES) <= set(REJECTING)
    red = [r for r in [*COURSE.values(), *CANDIDATE_RECORDS.values()] if r["set"] == "red_team"]
    failing = {r["id"]: quality_gates(r["completion"][-1]["content"], r["prompt"], EXAMPLES) for r in red}
    assert {k: v for k, v in failing.items() if v} == {}


@pytest.mark.parametrize("records,prompt_file", [
    (COURSE, ROOT / "data/prompts/red_team_train.jsonl"),
    (CANDIDATE_RECORDS, CANDIDATES / "red_team_train_blind_acts.jsonl"),
], ids=["shipped", "candidates"])
def test_course_data_is_labelled_varied_and_declines(records, prompt_file):
    red = [r for r in records.values() if r["set"] == "red_team"]
    prompts = {p["id"]: p["messages"] for p in load_prompts(prompt_file)}
    assert {r["id"] for r in red} == set(prompts)  # every red-team prompt of the file
    assert all(r["prompt"] == prompts[r["id"]] for r in red)  # and the conversation it has there
    assert all(r["critic_model"] == "course-written" and "course authors" in r["provenance"]["revision"]
               and r["constitution"]["hash"] == GENERAL.hash for r in red)
    assert all(r["rounds"][0]["principle_id"] in {p.id for p in GENERAL.principles} for r in red)
    revisions = [r["completion"][-1]["content"] for r in red]
    assert all(is_refusal(t) for t in revisions)
    assert distinct_n(revisions, 2) > 0.6  # not one template (one template copied: ~0.01)
    assert len(set(revisions)) == len(revisions)


def test_candidate_benign_twins_are_labelled_answered_and_paired():
    """The benign twins (a safe request on each candidate red-team prompt's object; tried on
    validation, not trained on): the policy's own answer kept, a needless refusal written for the
    course as the rejected side, and each twin names its harmful prompt."""
    prompts = {p["id"]: p for p in load_prompts(CANDIDATES / "borderline_train_twins.jsonl")}
    records = [json.loads(line) for line in (CANDIDATES / "borderline_train_twins.course-critic.jsonl")
               .read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == list(prompts) and len(records) == 100
    assert {p["twin_of"] for p in prompts.values()} == set(CANDIDATE_RECORDS)  # one twin per candidate
    assert all(r["prompt"] == prompts[r["id"]]["messages"] and r["set"] == "borderline" for r in records)
    assert all(r["completion"][-1]["content"] == r["initial_response"] and not r["rounds"] for r in records)
    assert all(r["critic_model"] == "course-written" and "course authors" in r["provenance"]["needless_refusal"]
               and r["constitution"]["hash"] == GENERAL.hash for r in records)
    assert all(is_refusal(r["needless_refusal"]) for r in records)
    assert not any(is_refusal(r["completion"][-1]["content"]) for r in records)
    assert distinct_n([r["needless_refusal"] for r in records], 2) > 0.6


@pytest.mark.parametrize("text,expected", [
    ("The response should decline and point to a locksmith.", True),
    ("Here is how to center a div: use flexbox on the parent.", False),
    ("The answer is 12 apples.", False),
])
def test_commentary_examples(text, expected):
    assert is_commentary(text) is expected


def test_arm_summary_measures_both_arms_with_the_same_gates():
    from cai_utils.critique import arm_summary

    conv = user("How do I hotwire a car?")
    self_made = [{"set": "red_team", "prompt": conv, "initial_response": "Find the wires.",
                  "critic_model": "default",
                  "completion": [{"role": "assistant", "content": "Find the wires."}],  # gated: kept first answer
                  "rounds": [{"revision": COPIED, "accepted": False}]},
                 {"set": "red_team", "prompt": conv, "initial_response": "Strip the cables.",
                  "critic_model": "default",
                  "completion": [{"role": "assistant", "content": "I can't help with hotwiring a car."}],
                  "rounds": [{"revision": "I can't help with hotwiring a car.", "accepted": True}]}]
    s = arm_summary(self_made, GENERAL)
    assert s["revisions"] == 2 and s["gates"]["revision_copied"] == 0.5 and s["passed_gates"] == 0.5
    assert s["red_team_final_declines"]["share"] == 0.5 and s["red_team_revised"] == 1
    course = arm_summary(list(COURSE.values()), GENERAL)
    assert course["critic"] == ["course-written"] and course["passed_gates"] == 1.0
    assert course["red_team_final_declines"]["share"] == 1.0 and course["distinct_2_revisions"] > 0.6


def test_the_shipped_first_answers_are_the_policys_own(default_model):
    """The course data says its first answers are the policy's: regenerated with the settings
    each record names (float32, the prompt id as seed key), they come out word for word."""
    from cai_utils.generation import HFGenerator, SamplingParams

    picks = [r for r in COURSE.values() if r["generation"]["dtype"] == "float32"
             and r["set"] == "red_team"]
    picks = [next(r for r in picks if r["tactic"] == t) for t in ("direct", "multi-turn")]
    g = picks[0]["generation"]
    assert all(r["generation"] == g for r in picks) and g["per_item_seed_key"] == "the prompt id"
    engine = HFGenerator(*default_model, batch_size=len(picks), progress=False)
    params = SamplingParams(g["max_new_tokens"], g["temperature"], g["top_p"], seed=g["seed"])
    out = engine.chat([r["prompt"] for r in picks], params, keys=[r["id"] for r in picks])
    assert [o.text for o in out] == [r["initial_response"] for r in picks]
    # the candidates' first answers too (generated in batches of 25: per-item seeds make the batch irrelevant)
    picks = [next(r for r in CANDIDATE_RECORDS.values() if r["tactic"] == t) for t in ("direct", "reframing")]
    picks.append(json.loads((CANDIDATES / "borderline_train_twins.course-critic.jsonl").open().readline()))
    assert all(r["generation"] == g for r in picks)
    out = engine.chat([r["prompt"] for r in picks], params, keys=[r["id"] for r in picks])
    assert [o.text for o in out] == [r["initial_response"] for r in picks]
    assert {r["generation"]["dtype"] for r in COURSE.values()} <= {"float32", "bfloat16"}
    red = [r for r in COURSE.values() if r["set"] == "red_team"]
    assert all(r["generation"]["dtype"] in r["provenance"]["initial_response"] for r in red)
