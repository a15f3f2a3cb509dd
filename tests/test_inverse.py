"""Inverse CAI (cai_utils.inverse): the pool, the scores, the greedy pick, the written file."""
import hashlib
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from cai_utils import constitution as cons
from cai_utils import inverse
from cai_utils.data import DataError, read_jsonl


def tiny(name, principles):
    return cons.from_dict({"name": name, "version": "1.0.0", "description": "A test.",
                           "principles": [{"id": i, "critique": "Look.", "revision": "Fix.",
                                           "preference": q} for i, q in principles]})


def test_pool_dedupes_normalised_questions_and_keeps_ids_unique():
    a = tiny("alpha", [("kind", "Which reply is kinder?"), ("short", "Which reply is shorter?")])
    b = tiny("beta", [("kind-again", "  which REPLY is kinder !"),
                      ("short", "Which reply is briefer?")])
    pool = inverse.candidate_pool([a, b])
    assert [(c.principle.id, c.source) for c in pool] == [
        ("kind", "alpha"), ("short", "alpha"), ("beta-short", "beta")]
    assert pool[2].principle.preference == "Which reply is briefer?"


def test_default_pool_is_every_shipped_principle_and_the_distractors(root):
    pool = inverse.candidate_pool(inverse.default_pool())
    shipped = [cons.load(p) for p in sorted((root / "constitutions").glob("*.yaml"))]
    distractors = cons.load(root / inverse.DISTRACTORS)
    questions = {inverse.normalise(p.preference)
                 for c in shipped + [distractors] for p in c.principles}
    assert len(pool) == len(questions)  # one candidate per distinct question
    assert len({c.principle.id for c in pool}) == len(pool)
    assert pool[0].source == "harmless-general"  # the default constitution keeps its ids
    assert {c.principle.id for c in pool if c.source == "distractors"} == {
        p.id for p in distractors.principles} and len(distractors.principles) >= 6
    assert not {c.principle.id for c in pool if c.source == "harmless-general"} ^ {
        p.id for p in cons.load(root / "constitutions/harmless-general.yaml").principles}


# rows: candidates, columns: pairs (P(chosen better)). "a" explains pairs 0-5, "b" pairs 6-9 with a
# larger margin than "a" loses there; "c" is "a" with weaker margins; "d" never helps
SYNTHETIC = {
    "a": [0.9] * 6 + [0.3] * 4,
    "b": [0.35] * 6 + [0.9] * 4,
    "c": [0.6] * 6 + [0.4] * 4,
    "d": [0.45] * 10,
}


def synthetic():
    pool = [inverse.Candidate(cons.Principle(k, "Look.", "Fix.", f"Which reply is {k}?"),
                              "distractors" if k == "d" else "x") for k in SYNTHETIC]
    return [SYNTHETIC[c.principle.id] for c in pool], pool


def test_ranking_and_greedy_pick_the_principles_that_explain_the_pairs():
    matrix, pool = synthetic()
    table = inverse.ranking(matrix, pool)
    assert [r["id"] for r in table] == ["a", "c", "b", "d"]  # c ties a on agreement, less margin
    assert table[0]["agreement"] == 0.6 and abs(table[0]["mean_margin"] - 0.16) < 1e-9
    assert inverse.above_distractors(table, "x") == 3
    # a alone explains 6 pairs; a with b explains all 10 (means 0.625 and 0.6); c adds nothing
    assert inverse.greedy_select(matrix, 3) == [(0, 0.6), (1, 1.0)]
    assert inverse.greedy_select(matrix, 1) == [(0, 0.6)]
    assert inverse.explained(matrix, [0, 2]) == [True] * 6 + [False] * 4


def test_the_first_pick_is_made_even_when_nothing_explains_a_pair():
    matrix, pool = synthetic()
    assert inverse.greedy_select([matrix[3]], 3) == [(0, 0.0)]


def test_relabelling_reorients_the_matrix_without_judging_again():
    pairs = [([], "short", "much longer"), ([], "a long answer", "brief")]
    relabelled, flipped = inverse.relabel(pairs, inverse.longer)
    assert [p[1] for p in relabelled] == ["much longer", "a long answer"]
    assert flipped == [True, False]
    assert inverse.reorient([[0.8, 0.7]], flipped) == [[pytest.approx(0.2), 0.7]]


def test_the_written_constitution_validates(tmp_path, root):
    matrix, pool = synthetic()
    result = inverse.infer(matrix, pool, top_k=3)
    inferred = inverse.to_constitution(result, pool, "runs/x/My_Prefs.jsonl")
    written = inferred.save(tmp_path / "c.yaml")
    run = subprocess.run([sys.executable, "-m", "cai_utils", "validate", str(written)],
                         capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stderr
    loaded = cons.load(written)
    assert loaded == inferred and loaded.name == "inferred-from-my-prefs"
    assert [p.id for p in loaded.principles] == ["a", "b"]
    assert "My_Prefs.jsonl (10 pairs)" in loaded.description
    assert "explains 100%" in loaded.description
    assert [s["gain"] for s in loaded.meta["selected"]] == [0.6, pytest.approx(0.4)]


def shipped_pairs(root, n=12):
    """Harmful pairs (revision, first answer) and benign ones (answer, needless refusal)."""
    refusals = {r["id"]: r["needless_refusal"]
                for r in read_jsonl(root / "data/sft/needless_refusals.jsonl")}
    records = read_jsonl(root / "data/sft/harmless-general.course-critic.jsonl")
    harmful = [(r["prompt"], r["completion"][-1]["content"], r["initial_response"])
               for r in records if r["set"] == "red_team"][:n // 2]
    benign = [(r["prompt"], r["completion"][-1]["content"], refusals[r["id"]])
              for r in records if r["id"] in refusals][:n // 2]
    return harmful + benign


def coin(*parts):
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16) / 16 ** 8


def fake_prob_first(questions, desc=None):
    """P(A) from a judge that, told prefer-longer, picks the longer answer (with a lean of 0.1
    towards (A), which the two orders cancel), and for any other principle answers with a fixed
    pseudo-random number."""
    return [(0.8 if len(a) > len(b) else 0.2) + 0.1 if p.id == "prefer-longer" else coin(p.id, a, b)
            for p, _, a, b in questions]


def test_a_judge_that_reads_length_puts_the_length_distractor_first(root):
    judge = SimpleNamespace(prob_first=fake_prob_first)
    pool = inverse.candidate_pool(inverse.default_pool())
    pairs, _ = inverse.relabel(shipped_pairs(root), inverse.longer)
    matrix = inverse.judge_matrix(judge, pool, pairs)
    result = inverse.infer(matrix, pool, top_k=3)
    first = result["ranking"][0]
    assert (first["id"], first["agreement"], first["n"]) == ("prefer-longer", 1.0, 12)
    assert result["selected"][0]["id"] == "prefer-longer" and len(result["selected"]) == 1
    # the opposite labels ("shorter is better") put it last
    shorter = inverse.reorient(matrix, [True] * len(pairs))
    assert inverse.ranking(shorter, pool)[-1]["id"] == "prefer-longer"


def test_a_judge_that_only_reads_the_position_explains_nothing(root):
    judge = SimpleNamespace(prob_first=lambda questions, desc=None: [0.8] * len(questions))
    pool = inverse.candidate_pool([root / inverse.DISTRACTORS])
    matrix = inverse.judge_matrix(judge, pool, shipped_pairs(root, 4))
    assert all(p == pytest.approx(0.5) for row in matrix for p in row)  # both orders cancel it
    assert {r["agreement"] for r in inverse.ranking(matrix, pool)} == {0.0}


def test_bad_pair_files_are_one_line_errors(tmp_path):
    from cai_utils.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing rejected"):
        inverse.load_pairs(bad)
    assert main(["infer-constitution", "--pairs", str(bad), "--out", str(tmp_path / "o.yaml")]) == 2
    assert main(["infer-constitution", "--pairs", str(bad), "--out", "o", "--top", "0"]) == 2


def test_the_subcommand_takes_the_profile_option():
    from cai_utils.cli import build_parser

    args = build_parser().parse_args(["infer-constitution", "--pairs", "p", "--out", "o",
                                      "--profile", "t4-cpu"])
    assert (args.profile, args.top, args.pool, args.limit) == ("t4-cpu", 5, None, None)


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_round_trip_with_the_offline_judge(tmp_path, root):
    pairs = tmp_path / "tiny.jsonl"
    rows = [{"prompt": c, "chosen": [{"role": "assistant", "content": x}], "rejected": y}
            for c, x, y in shipped_pairs(root, 2)]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "inferred.yaml"
    pool = [str(root / "constitutions/hhh-minimal.yaml"), str(root / inverse.DISTRACTORS)]
    run = subprocess.run([sys.executable, "-m", "cai_utils", "infer-constitution", "--pairs",
                          str(pairs), "--out", str(out), "--profile", "ci", "--top", "2",
                          "--pool", *pool], capture_output=True, text=True, cwd=root, timeout=900)
    assert run.returncode == 0, run.stderr
    assert "11 candidates judged on 2 pairs" in run.stdout
    assert run.stdout.count("(distractors)") == 8 and run.stdout.count("(hhh-minimal)") == 3
    inferred = cons.load(out)
    assert inferred.name == "inferred-from-tiny" and 1 <= len(inferred.principles) <= 2
    assert inferred.meta["pairs"] == 2 and inferred.meta["rule"] == "mean"
    first = yaml.safe_load(out.read_text())["principles"][0]["id"]
    assert first == inferred.meta["selected"][0]["id"]
    scores = json.loads(out.with_suffix(".scores.json").read_text())
    assert len(scores["ranking"]) == len(scores["p_chosen"]) == 11
    assert all(len(row) == 2 for row in scores["p_chosen"].values()) and scores["profile"] == "ci"
