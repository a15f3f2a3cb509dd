"""`run`: every stage once, then resumed; the principle ablation."""
import json
import os
import subprocess
import sys

import pytest

from cai_utils.data import DataError, file_sha256
from cai_utils.manifest import read_manifest
from cai_utils.ablation import ablate
from cai_utils.pipeline import run_pipeline, stage_table

from conftest import CONSTITUTION, tiny

# the ci profile with the shortest training and evaluation that still runs every code path: the
# session's shared run (``tiny_run``, read-only) is made with it; tests that change a run folder
# work on a copy (``tiny_run_copy``), so no test depends on the order they run in
TINY = tiny("ci")


@pytest.fixture
def pipeline(tiny_run):
    return tiny_run


@pytest.mark.slow
def test_run_makes_every_stage_and_the_report(pipeline):
    out, state = pipeline
    assert list(state["stages"]) == ["validate", "critique", "self_critique", "label", "sft", "dpo",
                                     "reward", "ppo", "evaluate"]
    assert all(s["status"] == "ran" for s in state["stages"].values())
    assert json.loads((out / "pipeline.json").read_text())["total_seconds"] == state["total_seconds"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert list(report["metrics"]) == ["base", "sft", "dpo", "ppo"]
    assert set(report["alignment_tax"]) == {"sft", "dpo", "ppo"}
    assert report["models"]["ppo"] == str(out / "ppo")
    assert sorted(p.name for p in (out / "report" / "charts").iterdir()) == [
        "capability.png", "harmlessness.png", "helpfulness.png", "refusal.png", "tradeoff.png"]
    # the training arm is the course-written critic; the self-critique arm beside it has its gates
    assert read_manifest(out / "sft.jsonl")["critic"] == "course"
    gates = read_manifest(out / "self-critique" / "sft.jsonl")["quality"]["gates"]
    assert gates["n_revisions"] > 0 and set(gates) >= {"revision_copied", "revision_off_topic"}
    metrics = {(r["model"], r["metric"]) for r in report["comparisons"]}
    assert ("dpo", "refusal_red_team") in metrics and ("ppo", "refusal_borderline") in metrics
    assert "| ppo |" in (out / "report" / "report.md").read_text()
    # the report sets the critic arms side by side, measured with the same gates, and says
    # which labels trained DPO
    data = report["training_data"]
    assert list(data["arms"]) == ["course critic (trained on)", "self-critique (gate report, not trained on)"]
    assert data["arms"]["course critic (trained on)"]["passed_gates"] == 1.0
    assert data["labels"]["label_source"] == "rule" and data["labels"]["pairs"] > 0
    assert "DPO and the reward model were trained on the **rule** labels" in (out / "report" / "report.md").read_text()
    assert "| total |" in stage_table(state)


@pytest.mark.slow
def test_rerun_skips_complete_stages_and_resumes_an_interrupted_one(tiny_run_copy):
    out = tiny_run_copy
    again = run_pipeline(out, profile=TINY, constitution=CONSTITUTION, progress=False,
                         log=lambda _: None)
    assert [n for n, s in again["stages"].items() if s["status"] == "ran"] == ["validate"]
    assert again["stages"]["sft"]["earlier_seconds"] > 0
    # as if the run had died during PPO: its adapter is incomplete
    (out / "ppo" / "adapter.manifest.json").unlink()
    base_answers = read_manifest(out / "report" / "answers" / "base.jsonl")
    resumed = run_pipeline(out, profile=TINY, constitution=CONSTITUTION, progress=False,
                           log=lambda _: None)
    assert [n for n, s in resumed["stages"].items() if s["status"] == "ran"] == [
        "validate", "ppo", "evaluate"]
    # the report is remade, but the base model's answers are reused, not regenerated
    assert read_manifest(out / "report" / "answers" / "base.jsonl") == base_answers


@pytest.mark.slow
def test_new_sft_data_retrains_every_model_downstream_of_sft(tiny_run_copy):
    out = tiny_run_copy
    lines = (out / "sft.jsonl").read_text().splitlines(True)
    (out / "sft.jsonl").write_text("".join(lines[1:]))  # as if stage 1 had been redone
    rerun = run_pipeline(out, profile=TINY, constitution=CONSTITUTION, progress=False,
                         log=lambda _: None)
    ran = [n for n, s in rerun["stages"].items() if s["status"] == "ran"]
    # the pairs are made again from the new stage-1 file (each pair records its source), and
    # every model after them retrains
    assert ran == ["validate", "label", "sft", "dpo", "reward", "ppo", "evaluate"]
    assert read_manifest(out / "prefs.jsonl")["source_sha256"] == file_sha256(out / "sft.jsonl")


@pytest.mark.slow
def test_run_refuses_to_mix_constitutions_in_one_folder(tiny_run_copy):
    out = tiny_run_copy
    with pytest.raises(DataError, match="made with another constitution"):
        run_pipeline(out, profile=TINY, constitution="constitutions/hhh-minimal.yaml",
                     progress=False, log=lambda _: None)


@pytest.mark.slow
def test_a_run_reuses_earlier_work_that_fits_and_trains_only_the_rest(pipeline, tmp_path):
    src, _ = pipeline  # another run's files, as notebooks 02-06 leave them for notebook 07
    reuse = {"critique": src / "sft.jsonl", "self_critique": src / "self-critique" / "sft.jsonl",
             "label": src / "prefs.jsonl", "sft": src / "sft", "reward": src / "reward",
             "ppo": src / "ppo",
             "dpo": src / "sft"}  # an adapter not trained on these pairs: does not fit
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(tmp_path / "x", profile=TINY, constitution=CONSTITUTION, reuse={"grpo": src})
    before = {p: p.stat().st_mtime_ns for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "notebook07"
    state = run_pipeline(out, profile=TINY, constitution=CONSTITUTION, progress=False,
                         log=lambda _: None, reuse=reuse)
    status = {name: s["status"] for name, s in state["stages"].items()}
    for stage in ("critique", "self_critique", "label", "sft", "reward", "ppo"):
        assert status[stage] == f"reused: {reuse[stage]}", stage
    assert status["dpo"] == status["evaluate"] == "ran"
    assert not (out / "sft").exists() and not (out / "sft.jsonl").exists()
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["models"]["sft"] == str(src / "sft") and report["models"]["ppo"] == str(src / "ppo")
    assert report["models"]["dpo"] == str(out / "dpo")
    assert read_manifest(out / "dpo" / "adapter.jsonl")["init_sha256"] is not None  # from the reused SFT
    assert "course critic (trained on)" in report["training_data"]["arms"]  # read from the reused file
    assert {p: p.stat().st_mtime_ns for p in src.rglob("*") if p.is_file()} == before  # only read


def run_cli(*args):
    env = {**os.environ, "CAI_PROFILE": "ci", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "cai_utils", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["run", "--constitution", "nope.yaml"], "nope.yaml"),
    (["evaluate", "--adapter", "constitutions"], "not an adapter folder"),
    (["evaluate", "--constitution", "nope.yaml"], "nope.yaml"),
    (["ablate", "--principles", "no-such-principle"], "no principle 'no-such-principle'"),
])
def test_cli_rejects_bad_input_with_one_line_before_any_work(tmp_path, args, message):
    result = run_cli(*args, "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_ablation_compares_each_removed_principle_with_the_full_constitution(tmp_path):
    result = ablate(CONSTITUTION, tmp_path, ["no-crime-howto"], profile=TINY, n_prompts=2,
                    sft_steps=1, eval_limit=2, progress=False)
    variants = result["variants"]
    assert list(variants) == ["full", "without no-crime-howto"]
    assert variants["full"]["drop_pct"] == 0
    # the summary figures follow from the per-prompt ratings each variant stores
    full, without = (variants[k]["ratings"] for k in variants)
    assert len(full) == len(without) == 2 and all(1 <= r <= 5 for r in full + without)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert variants["without no-crime-howto"]["harmlessness"]["mean"] == pytest.approx(mean(without))
    assert variants["without no-crime-howto"]["drop_pct"] == pytest.approx(
        (mean(full) - mean(without)) / mean(full) * 100, abs=0.01)
    assert variants["without no-crime-howto"]["vs_full"]["diff"] == pytest.approx(
        mean([w - f for f, w in zip(full, without)]), abs=1e-9)
    assert variants["without no-crime-howto"]["constitution"]["name"] == \
        "harmless-general-without-no-crime-howto"
    assert json.loads((tmp_path / "ablation.json").read_text())["variants"].keys() == variants.keys()


@pytest.mark.slow
def test_a_profile_without_rl_skips_reward_and_ppo_and_reports_without_them(tiny_run_copy):
    out = tiny_run_copy
    state = run_pipeline(out, profile=TINY.replace(rl=False), constitution=CONSTITUTION,
                         progress=False, log=lambda _: None)
    assert state["stages"]["reward"]["status"] == state["stages"]["ppo"]["status"] == \
        "skipped (rl=False in this profile)"
    # the report's models changed, so it is remade without ppo (the base answers come from the cache)
    assert state["stages"]["evaluate"]["status"] == "ran"
    report = json.loads((out / "report" / "report.json").read_text())
    assert list(report["metrics"]) == ["base", "sft", "dpo"]


@pytest.mark.slow
def test_a_changed_training_setting_retrains_that_stage_only(tiny_run_copy):
    """``run --set dpo.beta=0.2`` on a finished folder: DPO was trained with another beta, so it
    trains again (and the report is remade); SFT, the reward model and PPO keep theirs."""
    out = tiny_run_copy
    assert read_manifest(out / "dpo" / "adapter.jsonl")["settings"]["dpo"]["beta"] == TINY.dpo.beta
    state = run_pipeline(out, profile=TINY.replace(dpo={"beta": 0.2}), constitution=CONSTITUTION,
                         progress=False, log=lambda _: None)
    assert [n for n, s in state["stages"].items() if s["status"] == "ran"] == ["validate", "dpo", "evaluate"]
    assert read_manifest(out / "dpo" / "adapter.jsonl")["settings"]["dpo"]["beta"] == 0.2


@pytest.mark.slow
def test_stage1_data_for_other_prompts_is_refused_not_silently_kept(pipeline):
    """``run --set n_red_team=...`` over a folder whose stage-1 file covers other prompts: one
    line (SFT would otherwise train on the old file), and nothing trained or rewritten."""
    out, _ = pipeline
    before = (out / "sft.jsonl").read_text(), read_manifest(out / "sft" / "adapter.jsonl")
    with pytest.raises(DataError, match=r"sft.jsonl: was made with a different prompts \("):
        run_pipeline(out, profile=TINY.replace(n_red_team=TINY.n_red_team + 1),
                     constitution=CONSTITUTION, progress=False, log=lambda _: None)
    with pytest.raises(DataError, match="was made with a different critic_model"):
        run_pipeline(out, profile=TINY.replace(critic="self"), constitution=CONSTITUTION,
                     progress=False, log=lambda _: None)
    assert ((out / "sft.jsonl").read_text(), read_manifest(out / "sft" / "adapter.jsonl")) == before


@pytest.mark.slow
def test_a_changed_pair_setting_is_refused_not_silently_kept(pipeline):
    """``run --set n_pairs=...`` over a folder whose pairs were made with another count: a
    one-line error (the pairs file would otherwise be kept as it is), and nothing trained."""
    out, _ = pipeline
    before = read_manifest(out / "dpo" / "adapter.jsonl")
    with pytest.raises(DataError, match=rf"was made with a different n_pairs \({TINY.n_pairs}, not {TINY.n_pairs + 1}\)"):
        run_pipeline(out, profile=TINY.replace(n_pairs=TINY.n_pairs + 1), constitution=CONSTITUTION,
                     progress=False, log=lambda _: None)
    assert read_manifest(out / "dpo" / "adapter.jsonl") == before
