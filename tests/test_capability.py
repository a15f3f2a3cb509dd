"""The alignment tax and the course's offline capability tasks."""
import json
import math

import pytest

from cai_utils.capability import TaxReport, alignment_tax, capability_scores, task_spec, tasks_folder

LOCAL = ("cai_science", "cai_arithmetic", "cai_commonsense")


def test_tax_is_positive_for_a_regression_and_negative_for_a_gain():
    tax = alignment_tax({"arc": 0.80, "gsm8k": 0.40}, {"arc": 0.60, "gsm8k": 0.50})
    assert tax["arc"] == pytest.approx(25.0)  # 0.80 -> 0.60 lost a quarter: a regression
    assert tax["gsm8k"] == pytest.approx(-25.0)  # 0.40 -> 0.50 is a gain
    assert alignment_tax({"arc": 0.5}, {"arc": 0.5}) == {"arc": 0.0}


@pytest.mark.parametrize("base,aligned,message", [
    ({"arc": 0.5, "mmlu": 0.4}, {"arc": 0.5}, "missing from the aligned scores: mmlu"),
    ({"arc": 0.5}, {"arc": 0.5, "mmlu": 0.4}, "missing from the base scores: mmlu"),
    ({"arc": 0.0}, {"arc": 0.3}, "arc: the base score is 0"),
    ({"arc": math.nan}, {"arc": 0.3}, "arc: no score"),
    ({"arc": 0.5}, {"arc": None}, "arc: no score"),
])
def test_tax_refuses_to_score_what_is_not_there(base, aligned, message):
    with pytest.raises(ValueError, match=message):
        alignment_tax(base, aligned)


def test_tax_report_prints_a_table_and_the_mean():
    report = TaxReport({"a": 0.5, "b": 0.25}, {"a": 0.4, "b": 0.25}, name="dpo")
    assert report.tax == {"a": 20.0, "b": 0.0}
    assert report.mean == pytest.approx(10.0)
    text = str(report)
    assert "dpo" in text.splitlines()[0] and text.splitlines()[-1].split() == ["mean", "+10.0%"]
    assert "| mean |  |  | +10.0% |" in report._repr_markdown_()
    with pytest.raises(ValueError, match="missing from the aligned"):
        str(TaxReport({"a": 0.5}, {}))


@pytest.mark.parametrize("task", LOCAL)
def test_local_tasks_have_at_least_100_well_formed_items(task):
    spec = task_spec(task)
    assert spec["task"] == task and spec["output_type"] == "multiple_choice"
    [path] = spec["dataset_kwargs"]["data_files"].values()
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert len(rows) >= 100
    assert len({r["question"] for r in rows}) == len(rows), "duplicate questions"
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4, r
        assert 0 <= r["answer"] < 4
    # the right answer is not always in the same place
    assert max(sum(r["answer"] == k for r in rows) for k in range(4)) < 0.4 * len(rows)


def test_standard_task_names_pass_through():
    assert task_spec("arc_easy") == "arc_easy"
    assert (tasks_folder() / "_cai_mc_template_yaml").is_file()


@pytest.mark.slow
def test_capability_scores_through_lm_eval(default_model):
    """One limit for every task, and a task's own limit where the profile names one (the t4
    profile asks 20 of each MMLU subject and 200 of the other tasks)."""
    model, tokenizer = default_model
    scores = capability_scores(model, tokenizer, ["cai_science", "cai_arithmetic"], limit=8,
                               batch_size=8, task_limits={"cai_arithmetic": 5})
    assert list(scores) == ["cai_science", "cai_arithmetic"]
    for task, s in scores.items():
        n = 5 if task == "cai_arithmetic" else 8
        assert s["n"] == n and len(s["correct"]) == n and s["metric"] == "acc,none"
        assert s["score"] == pytest.approx(sum(s["correct"]) / n)
        assert s["ci95"][0] <= s["score"] <= s["ci95"][1]


GENERATIVE_TASK = """task: cai_tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\n\n"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: 24
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
def test_generative_tasks_ignore_the_models_own_generation_config(default_model, tmp_path, monkeypatch):
    """Qwen2.5's generation_config.json carries a repetition penalty (1.1) and top-k; transformers'
    ``generate`` applies it under whatever lm-eval asks for, so gsm8k on a GPU profile would not
    be greedy decoding. Here a model whose config carries a strong penalty writes, through
    lm-eval, exactly what the same model with a plain config writes; without the guard it
    would not (checked directly on the first prompt)."""
    from cai_utils import capability

    model, tokenizer = default_model
    rows = [{"question": q, "answer": a} for q, a in (
        ("Repeat after me: go go go go go go.", "go go go"), ("Count from one to ten in words.", "one"),
        ("Say the word 'yes' five times.", "yes yes yes yes yes"))]
    (tmp_path / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "cai_tiny_gen.yaml").write_text(GENERATIVE_TASK.format(data="tiny.jsonl"))
    monkeypatch.setattr(capability, "tasks_folder", lambda: tmp_path)
    monkeypatch.setitem(capability.METRICS, "cai_tiny_gen", "exact_match,none")
    texts = []
    real_generate = model.generate

    def recording(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        texts.append(tokenizer.batch_decode(out[:, kwargs["input_ids"].shape[1]:]))
        return out

    monkeypatch.setattr(model, "generate", recording, raising=False)
    own = model.generation_config
    try:
        capability_scores(model, tokenizer, ["cai_tiny_gen"], batch_size=4)
        plain = texts.pop()
        model.generation_config = own.__class__.from_dict({**own.to_dict(), "repetition_penalty": 3.0,
                                                           "top_k": 5, "no_repeat_ngram_size": 2})
        capability_scores(model, tokenizer, ["cai_tiny_gen"], batch_size=4)
        assert texts.pop() == plain
        assert model.generation_config.repetition_penalty == 3.0  # given back afterwards
        ids = tokenizer("Question: Repeat after me: go go go go go go.\nAnswer:", return_tensors="pt").input_ids
        unguarded = real_generate(input_ids=ids, max_new_tokens=24, do_sample=False)
        guarded = real_generate(input_ids=ids, max_new_tokens=24, do_sample=False, repetition_penalty=1.0,
                                no_repeat_ngram_size=0)
        assert unguarded.tolist() != guarded.tolist()  # the penalty would have changed the text
    finally:
        model.generation_config = own


def test_scores_from_results_for_gsm8k_filters_and_nested_groups():
    """The GPU tasks' shapes of lm-eval output, without a GPU: gsm8k logs one sample per
    filter, mmlu is a group of groups with samples only per subtask."""
    from cai_utils.capability import scores_from_results

    result = {
        "results": {"gsm8k": {"exact_match,flexible-extract": 0.5, "exact_match,strict-match": 0.25},
                    "mmlu_stem_a": {"acc,none": 0.3}, "mmlu_other_b": {"acc,none": 0.5}},
        "groups": {"mmlu": {"acc,none": 0.4, "acc_stderr,none": 0.05}},
        "group_subtasks": {"mmlu": ["mmlu_stem", "mmlu_other"], "mmlu_stem": ["mmlu_stem_a"],
                           "mmlu_other": ["mmlu_other_b"]},
        "n-samples": {"gsm8k": {"effective": 4}, "mmlu_stem_a": {"effective": 10},
                      "mmlu_other_b": {"effective": 30}},
        "samples": {"gsm8k": [{"doc_id": d, "filter": f, "exact_match": float(d < k)}
                              for d in range(4) for f, k in (("strict-match", 1), ("flexible-extract", 2))]},
    }
    scores = scores_from_results(result, ["gsm8k", "mmlu"])
    assert scores["gsm8k"]["correct"] == [1.0, 1.0, 0.0, 0.0] and scores["gsm8k"]["n"] == 4
    assert scores["mmlu"]["n"] == 40 and scores["mmlu"]["correct"] == []
    assert scores["mmlu"]["ci95"] == pytest.approx([0.4 - 0.098, 0.4 + 0.098])
    with pytest.raises(Exception, match="no 'acc,none'"):
        scores_from_results({"results": {"arc_easy": {}}}, ["arc_easy"])
