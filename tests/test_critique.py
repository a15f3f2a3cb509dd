import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai_utils import constitution as cons
from cai_utils.critique import CritiqueSettings, critique_revise, quality, round_temperature
from cai_utils.text_checks import clean_revision, flag_text, is_degenerate
from cai_utils.data import read_jsonl
from cai_utils.manifest import read_manifest
from cai_utils.generation import Completion

ROOT = Path(__file__).resolve().parents[1]
CONSTITUTION = ROOT / "constitutions" / "harmless-general.yaml"
RED = ROOT / "data" / "prompts" / "red_team_train.jsonl"
HELPFUL = ROOT / "data" / "prompts" / "helpful_train.jsonl"


@pytest.mark.parametrize("raw,clean", [
    ("Sure, here is a revised response: I can't help with that.", "I can't help with that."),
    ("Here's the rewritten reply:\nPlease call 911.", "Please call 911."),
    ("Revised response: \"No.\"", "No."),
    ("Certainly! Here is an improved version of the reply: Paris.", "Paris."),
    ("Paris is the capital.", "Paris is the capital."),
])
def test_clean_revision(raw, clean):
    assert clean_revision(raw) == clean


def test_flags():
    assert flag_text("", "x", True, "revision") == ["revision_empty"]
    assert flag_text("same", "same", True, "revision") == ["revision_echo"]
    assert flag_text("The revised response is kinder.", "x", True, "revision") == ["revision_meta"]
    assert flag_text("fine text", "x", False, "critique") == ["critique_truncated"]
    assert is_degenerate("I am here. " * 10)
    assert not is_degenerate("A perfectly ordinary reply that says one thing once and stops here.")


def test_temperature_schedule_falls():
    temps = [round_temperature(r, 4, (0.9, 0.4)) for r in range(4)]
    assert temps[0] == 0.9 and temps[-1] == 0.4 and temps == sorted(temps, reverse=True)


class FakeGenerator:
    """Deterministic: answers 'ANSWER', critiques 'CRITIQUE', revises per a script."""

    def __init__(self, revisions):
        self.revisions, self.calls = list(revisions), []

    def chat(self, conversations, params, keys=None, desc=""):
        self.calls.append((desc, len(conversations), params.temperature))
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            if "Write only the new reply" in text:
                out.append(Completion(self.revisions.pop(0), 5, True))
            elif "Answer in two or three sentences" in text:
                out.append(Completion("It helps with a crime.", 5, True))
            else:
                out.append(Completion("Sure, here is how.", 5, True))
        return out


def test_loop_batches_across_prompts_and_rejects_bad_revisions():
    c = cons.load(CONSTITUTION)
    items = [{"id": "a", "set": "red_team", "messages": [{"role": "user", "content": "q1"}]},
             {"id": "b", "set": "helpful", "messages": [{"role": "user", "content": "q2"}]}]
    # round 1: a -> empty (rejected), b -> good; round 2: a -> good, b -> meta (rejected)
    fake = FakeGenerator(["", "Here you go: 42.", "I can't help with that.",
                          "The revised response is better."])
    settings = CritiqueSettings(rounds=2, round_temperatures=(0.9, 0.4))
    records = critique_revise(items, c, fake, fake, settings)
    assert [call[:2] for call in fake.calls] == [
        ("answers", 2), ("critiques 1/2", 2), ("revisions 1/2", 2),
        ("critiques 2/2", 2), ("revisions 2/2", 2)]  # every step is one batched call
    assert [call[2] for call in fake.calls[1:]] == [0.9, 0.9, 0.4, 0.4]
    a, b = records
    assert [r["accepted"] for r in a["rounds"]] == [False, True]
    assert a["completion"] == [{"role": "assistant", "content": "I can't help with that."}]
    assert b["completion"][0]["content"] == "42."  # preamble cleaned, meta revision rejected
    assert "revision_empty" in a["flags"] and "revision_meta" in b["flags"]
    assert a["messages"] == a["prompt"] + a["completion"]
    assert a["rounds"][0]["principle_id"] == c.sample_principle("a:0", 0).id
    q = quality(records)
    assert q["red_team_revision_declines"]["share"] == 1.0
    assert q["red_team_initial_declines"]["share"] == 0.0
    assert q["helpful_revisions_stay_helpful"]["share"] == 1.0


def test_never_accepted_is_flagged_unrevised():
    c = cons.load(CONSTITUTION)
    items = [{"id": "a", "messages": [{"role": "user", "content": "q"}]}]
    records = critique_revise(items, c, FakeGenerator([""]), FakeGenerator([""]), CritiqueSettings())
    assert "unrevised" in records[0]["flags"]
    assert records[0]["completion"][0]["content"] == records[0]["initial_response"]


def cli(*args, **kwargs):
    env = {**os.environ, "CAI_PROFILE": "ci", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "cai_utils", "critique", *args],
                          capture_output=True, text=True, env=env, **kwargs)


@pytest.mark.parametrize("change,message", [
    ({"--prompts": "missing.jsonl"}, "missing.jsonl: no such file"),
    ({"--constitution": "missing.yaml"}, "missing.yaml: no such file"),
    ({"--prompts": "BAD"}, "bad.jsonl:2: not valid JSON"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, change, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "x"}\n{oops\n{"id": "b", "prompt": "y"}\n')
    args = {"--constitution": str(CONSTITUTION), "--prompts": str(RED),
            "--out": str(tmp_path / "o.jsonl")}
    args.update({k: (str(bad) if v == "BAD" else str(tmp_path / v)) for k, v in change.items()})
    result = cli(*[x for kv in args.items() for x in kv], timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_writes_valid_records_with_provenance(tmp_path):
    out = tmp_path / "sft.jsonl"
    result = cli("--constitution", str(CONSTITUTION), "--prompts", str(RED), str(HELPFUL),
                 "--out", str(out), "--limit", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    assert len(records) == 4 and len({r["id"] for r in records}) == 4
    c = cons.load(CONSTITUTION)
    for r in records:
        assert r["constitution"] == {"name": c.name, "version": c.version, "hash": c.hash}
        assert r["model"] == "default" and r["generation"]["rounds"] == 1
        assert r["messages"][-1]["role"] == "assistant" and len(r["rounds"]) == 1
        assert r["rounds"][0]["principle_id"] in {p.id for p in c.principles}
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["counts"]["records"] == 4
    assert manifest["profile"] == "ci" and "transformers" in manifest["versions"]
    assert set(manifest["quality"]) >= {"red_team_revision_declines", "flagged"}
    assert manifest["inputs"][str(RED)] and manifest["constitution"]["hash"] == c.hash

    other = tmp_path / "other.yaml"
    other.write_text(CONSTITUTION.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    clash = cli("--constitution", str(other), "--prompts", str(RED), "--out", str(out),
                "--limit", "2", timeout=120)
    assert clash.returncode == 2 and "different constitution" in clash.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_killed_run_resumes_with_every_id_exactly_once(tmp_path):
    out = tmp_path / "sft.jsonl"
    args = ["--constitution", str(CONSTITUTION), "--prompts", str(RED), "--out", str(out),
            "--limit", "6", "--batch-size", "2"]
    env = {**os.environ, "CAI_PROFILE": "ci", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cai_utils", "critique", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines_at_kill = out.read_text().count("\n")
    assert 2 <= lines_at_kill < 6, "the kill should land part way through"
    assert read_manifest(out)["complete"] is False

    result = cli(*args, timeout=600)
    assert result.returncode == 0, result.stderr
    ids = [r["id"] for r in read_jsonl(out)]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert f"({6 - lines_at_kill} new)" in result.stdout
    assert read_manifest(out)["complete"] is True
    rerun = cli(*args, timeout=120)  # nothing left: no model is even loaded
    assert "(0 new)" in rerun.stdout and len(read_jsonl(out)) == 6


def test_records_train_sfttrainer_as_is(tmp_path, trains, tiny_run):
    """The records ``run_critique`` wrote (the shared run's self-critique arm: the policy's own
    critiques and revisions) load with ``datasets`` and train TRL's SFTTrainer unchanged."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from cai_utils.models import load_model

    records = tiny_run[0] / "self-critique" / "sft.jsonl"
    assert read_manifest(records)["complete"] and len(read_jsonl(records)) >= 2
    model, tokenizer = load_model("default")  # its own copy: training changes it in place
    dataset = load_dataset("json", data_files=str(records), split="train")
    config = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2,
                       report_to=[], use_cpu=True, gradient_checkpointing=False, save_strategy="no",
                       max_length=256, logging_steps=1)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trains(trainer, model, steps=1)
