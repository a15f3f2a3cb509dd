"""The GPU profiles' branches of the pipeline, run end to end on this CPU.

``t4-cpu`` and ``a100-cpu`` take every branch choice of ``t4`` and ``a100`` (``profiles.stand_in``)
at the ``ci`` sizes with the offline model. The session makes one run of each
(``conftest.tiny_run_t4`` / ``tiny_run_a100``) and these tests read what each stage wrote, so
``make test`` covers the t4 branches without running every notebook under each profile. The
a100 run's tests are ``e2e``: its branches but one are ``ci``'s (16-bit base, PPO) or ``t4``'s
(own critic, sampled pairs), judging on every principle has its own test in test_preferences,
and ``make test-all`` (CI) runs them with every notebook under both stand-ins."""
import json

import pytest

from cai_utils import constitution as cons
from cai_utils.adapters import is_done
from cai_utils.data import read_jsonl
from cai_utils.manifest import read_manifest

from conftest import CONSTITUTION, tiny

pytestmark = pytest.mark.slow


def stage_config(out, stage):
    return json.loads((out / stage / "train_config.json").read_text())


def lora_targets(out, stage):
    return set(json.loads((out / stage / "adapter_config.json").read_text())["target_modules"])


A100 = pytest.mark.e2e


@pytest.mark.parametrize("name,rl_stage", [("t4-cpu", "grpo"), pytest.param("a100-cpu", "ppo", marks=A100)])
def test_every_stage_runs_and_reports(request, name, rl_stage):
    out, state = request.getfixturevalue("tiny_run_t4" if name == "t4-cpu" else "tiny_run_a100")
    assert state["profile"] == name
    # the policy critiques itself: no separate self-critique arm beside it
    assert list(state["stages"]) == ["validate", "critique", "self_critique", "label", "sft", "dpo",
                                     "reward", rl_stage, "evaluate"]
    assert all(s["status"] == "ran" for n, s in state["stages"].items() if n != "self_critique")
    for stage in ("sft", "dpo", "reward", rl_stage):
        assert is_done(out / stage), stage
    report = json.loads((out / "report" / "report.json").read_text())
    assert list(report["metrics"]) == ["base", "sft", "dpo", rl_stage]
    # the GPU profiles score capability on the base model and DPO only
    assert report["lm_eval"]["models"] == ["base", "dpo"]
    assert "Not measured" in (out / "report" / "report.md").read_text()


@pytest.mark.parametrize("name", ["t4-cpu", pytest.param("a100-cpu", marks=A100)])
def test_stage1_is_the_policy_critiquing_itself_over_the_profiles_rounds(request, name):
    out, _ = request.getfixturevalue("tiny_run_t4" if name == "t4-cpu" else "tiny_run_a100")
    prof = tiny(name)
    records = read_jsonl(out / "sft.jsonl")
    manifest = read_manifest(out / "sft.jsonl")
    assert manifest["complete"] and manifest["profile"] == name
    assert records and all(r["model"] == "default" and r.get("critic_model", "default") == "default"
                           for r in records)
    assert {r["generation"]["rounds"] for r in records} == {prof.rounds} and prof.rounds == (
        2 if name == "t4-cpu" else 3)
    # each round has its own temperature, falling from the first to the last
    temps = [t["temperature"] for t in records[0]["rounds"]] if "temperature" in records[0]["rounds"][0] else None
    assert temps is None or temps == sorted(temps, reverse=True)


@pytest.mark.parametrize("name,mode", [("t4-cpu", "sampled"), pytest.param("a100-cpu", "all", marks=A100)])
def test_stage2_pairs_two_samples_labelled_by_the_judge(request, name, mode):
    out, _ = request.getfixturevalue("tiny_run_t4" if name == "t4-cpu" else "tiny_run_a100")
    manifest = read_manifest(out / "prefs.jsonl")
    assert (manifest["candidates"], manifest["label_source"], manifest["judge_mode"]) == ("samples", "judge", mode)
    records = read_jsonl(out / "prefs.jsonl")
    assert records and len(records) == manifest["counts"]["pairs"]
    principles = {p.id for p in cons.load(CONSTITUTION).principles}
    for r in records:
        judged = set(r["judge"]["principle_ids"])
        assert judged <= principles
        if mode == "all":  # every principle asked about every pair
            assert judged == principles
        else:  # one principle per pair, sampled
            assert len(judged) == 1


@pytest.mark.parametrize("name,four_bit", [("t4-cpu", True), pytest.param("a100-cpu", False, marks=A100)])
def test_training_on_the_profiles_base_with_lora_on_every_linear_layer(request, name, four_bit):
    out, _ = request.getfixturevalue("tiny_run_t4" if name == "t4-cpu" else "tiny_run_a100")
    for stage in ("sft", "dpo", "reward"):
        assert stage_config(out, stage)["load_in_4bit"] is four_bit, stage
    # all-linear: the MLP's projections too, not only attention
    assert {"gate_proj", "up_proj", "down_proj", "q_proj", "v_proj"} <= lora_targets(out, "sft")
    assert stage_config(out, "dpo")["init"] is not None  # DPO continues the SFT adapter
