"""Where a learner's work lives between notebooks and sessions: the runs folder, the constitution
notebooks 02-07 use, and each notebook's run folder for that constitution.

- ``runs_root()``: ``$CAI_RUNS`` (e.g. a folder on a mounted Google Drive, so a disconnected
  Colab session loses nothing), else ``runs/`` in the checkout.
- ``active_constitution()``: ``$CAI_CONSTITUTION``, else the version you last saved with notebook
  01's editor (its **Save** button calls ``choose_constitution``), else the shipped
  ``harmless-general``. Every notebook prints which one it uses and why.
- ``run_dir(notebook, profile, constitution)``: the shipped constitution keeps the plain
  ``notebook02-cpu`` names; any other gets its own folders, so stages made for one constitution
  are never resumed for another.
- ``critic_for``: the course-written critic exists only for the shipped constitution (its records
  carry that file's hash), so an edited one falls back to the policy as its own critic, with a
  note saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

from .data import project_root

DEFAULT_CONSTITUTION = "constitutions/harmless-general.yaml"
POINTER = "active-constitution.txt"  # in runs_root(): the path notebook 01 saved last


def runs_root() -> Path:
    """``$CAI_RUNS`` if set, else ``runs/`` in the checkout."""
    return Path(os.environ.get("CAI_RUNS") or project_root() / "runs")


def default_constitution() -> Path:
    return project_root() / DEFAULT_CONSTITUTION


def active_constitution() -> tuple[Path, str]:
    """The constitution notebooks 02-07 use and why: ``$CAI_CONSTITUTION``, else the file
    notebook 01's editor saved last, else the shipped one."""
    if os.environ.get("CAI_CONSTITUTION"):
        path = Path(os.environ["CAI_CONSTITUTION"])
        return (path if path.is_absolute() else project_root() / path), "set by $CAI_CONSTITUTION"
    pointer = runs_root() / POINTER
    if pointer.is_file():
        path = Path(pointer.read_text(encoding="utf-8").strip())
        if path.is_file():
            return path, f"saved last in notebook 01's editor (recorded in {pointer})"
        return default_constitution(), (f"the shipped one: {pointer} names {path}, which is gone "
                                        "(save again in notebook 01, or reset_constitution())")
    return default_constitution(), "the shipped one (nothing saved in notebook 01's editor)"


def choose_constitution(path: str | Path) -> Path:
    """Make ``path`` (validated first) the constitution notebooks 02-07 use; returns the pointer."""
    from . import constitution as cons

    path = Path(path).resolve()
    cons.load(path)  # a ConstitutionError names what is wrong; nothing is recorded then
    pointer = runs_root() / POINTER
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{POINTER}.tmp")
    tmp.write_text(f"{path}\n", encoding="utf-8")
    tmp.replace(pointer)  # readers see the old pointer or the new one, never half of one
    return pointer


def reset_constitution() -> None:
    """Back to the shipped constitution (unless ``$CAI_CONSTITUTION`` is set)."""
    (runs_root() / POINTER).unlink(missing_ok=True)


def is_default(const) -> bool:
    """Whether ``const`` is the shipped constitution (by content hash, not by file name)."""
    from . import constitution as cons

    return const.hash == cons.load(default_constitution()).hash


def run_dir(notebook: str, profile, const) -> Path:
    """``runs_root()/<notebook>-<profile>``, with the constitution's name and version added when
    it is not the shipped one."""
    tag = "" if is_default(const) else f"-{const.name}-{const.version}"
    return runs_root() / f"{notebook}-{profile.name}{tag}"


def critic_for(const, profile):
    """``(profile, note)``: the profile unchanged, or, when it asks for the course-written critic
    and that data was not written for ``const``, the profile with the policy as its own critic
    and a note that says so."""
    if profile.critic != "course" or is_default(const):
        return profile, f"critic: {profile.critic}"
    note = (f"critic: the course-written critiques and revisions were written for the shipped "
            f"constitution, not for {const.name} {const.version}, so stage 1 uses the policy as its "
            "own critic (expect most revisions to fail the quality gates on a 135M model; on a GPU, "
            "set the profile's critic to a larger model id)")
    return profile.replace(critic="self"), note


def notebook_outputs(profile, const) -> dict[str, Path]:
    """What notebooks 02-06 wrote for this profile and constitution, by pipeline stage, for
    ``run_pipeline(..., reuse=...)`` in notebook 07: only the files and folders that exist (the
    pipeline still checks each one fits before it uses it, and trains what is missing)."""
    rl = "grpo" if profile.load_in_4bit else "ppo"  # as the pipeline and notebook 06 choose
    where = {"critique": run_dir("notebook02", profile, const) / "sft.jsonl",
             "self_critique": run_dir("notebook02", profile, const) / "self-critique" / "sft.jsonl",
             "label": run_dir("notebook03", profile, const) / "prefs.jsonl",
             "sft": run_dir("notebook04", profile, const) / "sft",
             "dpo": run_dir("notebook05", profile, const) / "dpo",
             "reward": run_dir("notebook06", profile, const) / "reward",
             "ppo": run_dir("notebook06", profile, const) / rl}
    return {stage: path for stage, path in where.items() if path.exists()}
