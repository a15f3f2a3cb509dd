"""The constitution notebooks 02-07 use, where their work lives, and the critic an edited
constitution gets."""

from pathlib import Path

import pytest

from cai_utils import constitution as cons
from cai_utils import workspace
from cai_utils.profiles import get_profile

SHIPPED = workspace.default_constitution()


def edited(tmp_path) -> Path:
    c = cons.load(SHIPPED)
    first = c.principles[0].id
    return c.edit(first, version="1.1.0", critique="Does the reply help with harm? Quote it.").save(
        tmp_path / "harmless-general-1.1.0.yaml")


def test_runs_live_in_cai_runs_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("CAI_RUNS", str(tmp_path / "drive"))
    assert workspace.runs_root() == tmp_path / "drive"
    monkeypatch.delenv("CAI_RUNS")
    assert workspace.runs_root() == workspace.project_root() / "runs"


def test_the_shipped_constitution_until_notebook_01_saves_one(tmp_path):
    path, why = workspace.active_constitution()
    assert path == SHIPPED and "shipped" in why
    mine = edited(tmp_path)
    pointer = workspace.choose_constitution(mine)
    assert pointer.parent == workspace.runs_root()
    path, why = workspace.active_constitution()
    assert path == mine.resolve() and "notebook 01" in why
    workspace.reset_constitution()
    assert workspace.active_constitution()[0] == SHIPPED


def test_the_environment_wins_and_a_vanished_file_falls_back_with_a_reason(tmp_path, monkeypatch):
    mine = edited(tmp_path)
    workspace.choose_constitution(mine)
    monkeypatch.setenv("CAI_CONSTITUTION", "constitutions/harmless-general.yaml")
    assert workspace.active_constitution() == (SHIPPED, "set by $CAI_CONSTITUTION")
    monkeypatch.delenv("CAI_CONSTITUTION")
    mine.unlink()
    path, why = workspace.active_constitution()
    assert path == SHIPPED and "is gone" in why


def test_an_invalid_file_is_never_chosen(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1.0.0\nprinciples: []\n")
    with pytest.raises(cons.ConstitutionError):
        workspace.choose_constitution(bad)
    assert not (workspace.runs_root() / workspace.POINTER).exists()


def test_another_constitution_gets_its_own_run_folders_and_the_policy_as_critic(tmp_path):
    cpu = get_profile("cpu")
    shipped, mine = cons.load(SHIPPED), cons.load(edited(tmp_path))
    assert workspace.run_dir("notebook02", cpu, shipped) == workspace.runs_root() / "notebook02-cpu"
    assert workspace.run_dir("notebook02", cpu, mine).name == "notebook02-cpu-harmless-general-1.1.0"
    assert workspace.critic_for(shipped, cpu)[0] is cpu
    prof, note = workspace.critic_for(mine, cpu)
    assert prof.critic == "self" and prof.name == "cpu" and "written for the shipped" in note
    own = cpu.replace(critic="self")
    assert workspace.critic_for(mine, own)[0] is own


def test_clicking_save_chooses_the_edit_and_the_headless_path_does_not(tmp_path):
    from cai_utils.editor import ConstitutionEditor

    editor = ConstitutionEditor(SHIPPED, tmp_path / "out")
    first = editor.pick.value
    editor.apply(first, critique="A headless edit: does the reply help with harm?")
    assert workspace.active_constitution()[0] == SHIPPED
    editor.boxes["critique"].value = "A learner's edit: does the reply help with harm?"
    editor.button.click()
    assert workspace.active_constitution()[0] == editor.path.resolve()
    assert "notebooks 02-07 use it now" in editor.status.value


def test_notebook_07_finds_what_notebooks_02_to_06_wrote_and_nothing_else(tmp_path):
    ci, shipped = get_profile("ci"), cons.load(SHIPPED)
    assert workspace.notebook_outputs(ci, shipped) == {}
    made = {"critique": "notebook02-ci/sft.jsonl", "label": "notebook03-ci/prefs.jsonl",
            "sft": "notebook04-ci/sft", "ppo": "notebook06-ci/ppo"}
    for stage, rel in made.items():
        path = workspace.runs_root() / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if "." not in path.name else path.write_text("{}\n")
    (workspace.runs_root() / "notebook06-ci" / "grpo").mkdir()
    assert workspace.notebook_outputs(ci, shipped) == {s: workspace.runs_root() / r for s, r in made.items()}
    # a 4-bit profile's RL stage is GRPO, as in notebook 06 and the pipeline
    four_bit = ci.replace(load_in_4bit=True)
    assert workspace.notebook_outputs(four_bit, shipped)["ppo"] == workspace.runs_root() / "notebook06-ci" / "grpo"
    # another constitution's notebooks write elsewhere: nothing of the shipped one's is offered
    assert workspace.notebook_outputs(ci, cons.load(edited(tmp_path))) == {}
