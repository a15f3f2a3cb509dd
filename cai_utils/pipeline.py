"""``run``: the whole course as one resumable command (the principle ablation: ``ablation``).

validate -> critique -> label -> SFT -> DPO -> reward model -> PPO -> evaluate. Every stage
writes files with a manifest; a stage whose output is complete is skipped, so a run that was
interrupted resumes where it stopped. ``pipeline.json`` records each stage's wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from .data import DataError, project_root, read_jsonl, write_json_atomic, write_jsonl_atomic
from .locks import writes_to
from .manifest import check_resume, manifest_path, read_manifest
from .profiles import Profile, get_profile
from .workspace import DEFAULT_CONSTITUTION

STAGES = ("validate", "critique", "self_critique", "label", "sft", "dpo", "reward", "ppo", "evaluate")


def train_prompt_files() -> tuple[Path, Path, Path]:
    """The red-team, helpful and borderline training prompt files."""
    root = project_root() / "data" / "prompts"
    return root / "red_team_train.jsonl", root / "helpful_train.jsonl", root / "borderline_train.jsonl"


def stage1_items(prof: Profile) -> list[dict]:
    """The training prompts stage 1 works on: the profile's number of red-team, helpful and
    borderline prompts (None: all of a file, 0: none), each stratified by category."""
    from .data import load_prompts
    from .evaluation import stratified

    sizes = (prof.n_red_team, prof.n_helpful, prof.n_borderline)
    return [item for path, n in zip(train_prompt_files(), sizes) if n != 0
            for item in stratified(load_prompts(path), n)]


def stage1_settings(prof: Profile) -> dict:
    """What stage 1's file depends on besides the constitution: the prompts it covers (the
    profile's sizes) and who wrote the critiques, as its manifest records them."""
    from .course_critic import COURSE_CRITIC
    from .manifest import ids_digest

    critic = {"course": COURSE_CRITIC, "self": prof.model_for("critic")}.get(prof.critic, prof.critic)
    return {"prompts": ids_digest(stage1_items(prof)), "critic_model": critic}


def stage1(const, prof: Profile, out: Path) -> str:
    """Stage 1 with the profile's critic: the course-written records (``"course"``), the policy
    critiquing itself (``"self"``), or another model as critic (a model id)."""
    from .course_critic import write_course_arm
    from .critique import run_critique

    if prof.critic == "course":
        return write_course_arm(const, stage1_items(prof), out, prof.name)
    return run_critique(const, list(train_prompt_files()), out, profile=prof, items=stage1_items(prof),
                        critic_model=None if prof.critic == "self" else prof.critic)


def self_critique_arm(const, prof: Profile, out: Path) -> str:
    """A small self-critique run beside a stronger critic: what a 135M critic writes and what
    the quality gates reject (not trained on)."""
    from .critique import run_critique

    red, helpful, _ = train_prompt_files()
    n = prof.self_critique_prompts
    return run_critique(const, [red, helpful], out, profile=prof, limit=[n, max(1, n // 4)])


def training_data_summary(out: Path, const, prof: Profile, paths: dict | None = None) -> dict:
    """What trained the models, for the report: each stage-1 critic arm measured with the same
    gates (the arm trained on, and the self-critique arm beside it), and stage 2's pairs with
    the judge's agreement with the rule labels and which labels trained DPO, and the DPO
    checkpoints measured on validation when the profile keeps one by the over-refusal rule.
    ``paths`` gives the files by stage (``critique``, ``self_critique``, ``label``, ``dpo``)
    where they are not in ``out``."""
    from .critique import arm_summary

    paths = {"critique": out / "sft.jsonl", "self_critique": out / "self-critique" / "sft.jsonl",
             "label": out / "prefs.jsonl"} | (paths or {})
    arms = {}
    for name, path in ((f"{prof.critic} critic (trained on)", paths["critique"]),
                       ("self-critique (gate report, not trained on)", paths["self_critique"])):
        if Path(path).is_file() and not (prof.critic == "self" and "self-critique" in name):
            arms[name] = arm_summary(read_jsonl(path), const)
    labels = (read_manifest(paths["label"]) or {})
    counts = labels.get("counts", {})
    selection = Path(paths.get("dpo", out / "dpo")) / "checkpoints" / "selection.json"
    return {"arms": arms, "dpo_selection": json.loads(selection.read_text()) if selection.is_file() else None,
            "labels": {
        "pairs": counts.get("pairs"), "ties": counts.get("ties"), "kinds": counts.get("kinds"),
        "label_source": labels.get("label_source"), "judge_model": labels.get("judge_model"),
        "position_consistent": counts.get("position_consistent"),
        "judge_agrees_with_rule": counts.get("judge_agrees_with_rule"),
        "judge_agrees_with_rule_by_kind": counts.get("judge_agrees_with_rule_by_kind")}}


def _made_from(path: Path, source: Path | None) -> bool:
    """False when a data file's manifest records another content of its source file (pairs
    made from an earlier stage-1 file); files made before the source was recorded count."""
    from .data import file_sha256

    made = (read_manifest(path) or {}).get("source_sha256")
    return made is None or source is None or not Path(source).is_file() or made == file_sha256(source)


def _remake_if_stale(path: Path, source: Path | None, log) -> None:
    """Remove a data file (its ties and manifest too) made from another content of its source."""
    files = (path, path.with_name(path.stem + ".ties.jsonl"), manifest_path(path))
    if any(f.exists() for f in files) and not _made_from(path, source):  # all ties: no pairs file
        log(f"[label] {path} was made from an earlier {Path(source).name}: pairs made again")
        for stale in files:
            stale.unlink(missing_ok=True)


def _same_constitution(path: Path, const) -> bool:
    """True when a data file is complete; a DataError when it was made with another
    constitution (a rerun must not mix two constitutions in one folder)."""
    manifest = read_manifest(path)
    if not (manifest and manifest.get("complete")):
        return False
    made_with = (manifest.get("constitution") or {}).get("hash")
    if made_with != const.hash:
        raise DataError(f"{path}: was made with another constitution "
                        f"({manifest['constitution'].get('name')} {manifest['constitution'].get('version')}); "
                        "use a new --out or delete the folder")
    return True


@writes_to("out")
def run_pipeline(out, profile: str | Profile | None = None, constitution=DEFAULT_CONSTITUTION,
                 progress: bool = True, log: Callable[[str], None] = print,
                 reuse: dict[str, str | Path] | None = None) -> dict:
    """Run (or resume) every stage into ``out``; return ``{"stages": {...}, "report": path}``.

    ``reuse`` maps a stage (``critique``, ``self_critique``, ``label``, ``sft``, ``dpo``,
    ``reward``, ``ppo``) to its output made elsewhere, e.g. by notebooks 02-06
    (``workspace.notebook_outputs``). It is used in place of this run's own when it is complete
    and fits: data made with this constitution, an adapter trained on the data and from the
    adapters this run uses (an RL adapter on any prompts). Anything else is made here, in
    ``out``; reused files are only read.
    """
    from . import constitution as cons
    from . import adapters, report, rl, training
    from .data import load_prompts
    from .evaluation import stratified
    from .preferences import run_label

    prof = get_profile(profile)
    out = Path(out)
    const = cons.as_constitution(constitution)  # validate: a bad file stops here, nothing written
    out.mkdir(parents=True, exist_ok=True)
    red, helpful, borderline = train_prompt_files()
    rl_prompts = out / "rl_prompts.jsonl"
    rl_stage = "grpo" if prof.load_in_4bit else "ppo"  # PPO's value model does not fit 4-bit
    # each stage's output, by stage; a reused one replaces this run's own
    own = {"critique": out / "sft.jsonl", "self_critique": out / "self-critique" / "sft.jsonl",
           "label": out / "prefs.jsonl", "sft": out / "sft", "dpo": out / "dpo",
           "reward": out / "reward", "ppo": out / rl_stage}
    paths = dict(own)
    unknown = sorted(set(reuse or {}) - set(own))
    if unknown:
        raise ValueError(f"reuse: unknown stage(s) {', '.join(unknown)}; use {', '.join(own)}")

    def prompts_for_rl():
        """The prompts PPO (and, on GPU profiles, the sampled candidates) start from: harmful
        and benign ones, so the reward model's preference for answering safe requests counts."""
        if not rl_prompts.is_file():
            rows = (stratified(load_prompts(red), prof.n_red_team)
                    + stratified(load_prompts(helpful), prof.n_helpful)
                    + (stratified(load_prompts(borderline), prof.n_borderline) if prof.n_borderline != 0 else []))
            write_jsonl_atomic(rl_prompts, [{"id": r["id"], "messages": r["messages"]} for r in rows])
        return None

    train_rl = rl.train_grpo if rl_stage == "grpo" else rl.train_ppo

    def pairs_source() -> Path:  # samples mode draws two answers per prompt; the others pair stage 1
        return rl_prompts if prof.candidate_mode == "samples" else paths["critique"]

    def pairs_made_from() -> Path | None:
        """The stage-1 file the pairs must come from; None for sampled pairs, which do not depend
        on stage 1 (notebook 03 samples from a prompt file of its own)."""
        return None if prof.candidate_mode == "samples" else paths["critique"]

    def trained_with(stage: str) -> dict:  # a changed setting (run --set dpo.beta=...) retrains
        return adapters.training_settings(prof, stage)

    def report_models() -> dict:  # called once the adapters exist (model_labels checks them)
        return report.model_labels(prof.policy_model, [paths["sft"], paths["dpo"]]
                                   + ([paths["ppo"]] if prof.rl else []))

    def rl_current(any_prompts: bool = False) -> bool:
        return adapters.is_current(paths["ppo"], None if any_prompts else rl_prompts, paths["sft"],
                                   paths["reward"], settings=trained_with(rl_stage))
    steps = {
        "validate": (lambda: False, prompts_for_rl),
        # stage-1 data made for other prompts (n_red_team, ...) or by another critic is refused
        "critique": (lambda: _same_constitution(paths["critique"], const) and not check_resume(
                         paths["critique"], stage1_settings(prof)),
                     lambda: stage1(const, prof, paths["critique"])),
        # beside a stronger critic, a small self-critique arm shows what the gates reject
        "self_critique": (lambda: prof.critic == "self" or _same_constitution(paths["self_critique"], const),
                          lambda: self_critique_arm(const, prof, paths["self_critique"])),
        # mix and revision modes pair stage-1 answers; samples mode starts afresh
        # pairs made with other pair settings are refused (check_resume), not silently kept
        # pairs made from an earlier stage-1 file are made again (SFT retrains on the new file)
        "label": (lambda: _made_from(paths["label"], pairs_made_from()) and _same_constitution(
                      paths["label"], const) and not check_resume(paths["label"], {
                      "candidates": prof.candidate_mode,  # two samples have no rule: judge labels
                      "label_source": "judge" if prof.candidate_mode == "samples" else prof.label_source,
                      "judge_mode": prof.judge_mode, "tie_threshold": prof.tie_threshold,
                      "n_pairs": prof.n_pairs, "benign_pair_share": prof.benign_pair_share,
                      "pair_tactics": prof.pair_tactics}),
                  lambda: (_remake_if_stale(paths["label"], pairs_made_from(), log),
                           run_label(const, pairs_source(), paths["label"], profile=prof))[1]),
        # a stage is done when its adapter was trained on the current data and the current
        # upstream adapters (a rerun that retrains SFT retrains everything after it)
        "sft": (lambda: adapters.is_current(paths["sft"], paths["critique"], settings=trained_with("sft")),
                lambda: training.train_sft(paths["critique"], paths["sft"], model=prof.policy_model,
                                           profile=prof)),
        "dpo": (lambda: adapters.is_current(paths["dpo"], paths["label"], paths["sft"],
                                            settings=trained_with("dpo")),
                lambda: training.train_dpo(paths["label"], paths["dpo"], init=paths["sft"], profile=prof)),
        "reward": (lambda: rl.reward_is_current(paths["reward"], paths["label"], prof.reward.soft_labels,
                                                trained_with("reward")),
                   lambda: rl.train_reward(paths["label"], paths["reward"], model=prof.policy_model,
                                           profile=prof)),
        "ppo": (rl_current,
                lambda: train_rl(rl_prompts, paths["ppo"], reward=paths["reward"],
                                 init=paths["sft"], profile=prof)),
        # a model retrained in this run makes the old report stale (cached answers of the
        # models that did not change are reused)
        "evaluate": (lambda: report.is_done(out / "report", report_models(),
                                            report.lm_eval_plan(report_models(), prof)) and not any(
            s["status"] == "ran" for n, s in state["stages"].items() if n != "validate"),
                     lambda: report.evaluate(
                         report_models(), out / "report", profile=prof, constitution=const, progress=progress,
                         training_data=training_data_summary(out, const, prof, paths))),
    }

    def reusable(stage: str) -> bool:
        """Point the stage at its reused output when that one fits (else leave this run's)."""
        if stage not in (reuse or {}) or not Path(reuse[stage]).exists():
            return False
        paths[stage] = Path(reuse[stage])
        try:
            fits = rl_current(any_prompts=True) if stage == "ppo" else steps[stage][0]()
        except DataError:  # made with another constitution
            fits = False
        if not fits:
            paths[stage] = own[stage]
        return fits
    state_path = out / "pipeline.json"
    earlier = (json.loads(state_path.read_text()) if state_path.is_file() else {}).get("stages", {})
    state = {"profile": prof.name, "constitution": const.ref, "stages": {}}
    start = time.perf_counter()
    for stage in STAGES:
        done, run = steps[stage]
        name = rl_stage if stage == "ppo" else stage
        if stage in ("reward", "ppo") and not prof.rl:  # a profile sized without the RL stage
            state["stages"][name] = {"status": "skipped (rl=False in this profile)", "seconds": 0.0}
            log(f"[{name}] not in the {prof.name} profile (rl=False), skipped")
            continue
        if stage != "self_critique" or prof.critic != "self":
            if reusable(stage):
                state["stages"][name] = {"status": f"reused: {paths[stage]}", "seconds": 0.0}
                log(f"[{name}] reused {paths[stage]}")
                continue
        if done():
            state["stages"][name] = {"status": "skipped (already complete)", "seconds": 0.0,
                                     "earlier_seconds": earlier.get(name, {}).get(
                                         "seconds") or earlier.get(name, {}).get("earlier_seconds")}
            log(f"[{name}] already complete, skipped")
            continue
        log(f"[{name}] running ...")
        t0 = time.perf_counter()
        result = run()
        seconds = round(time.perf_counter() - t0, 1)
        state["stages"][name] = {"status": "ran", "seconds": seconds}
        log(f"[{name}] done in {seconds}s" + (f": {result}" if isinstance(result, str) else ""))
        state["total_seconds"] = round(time.perf_counter() - start, 1)
        write_json_atomic(state_path, state)
    state["total_seconds"] = round(time.perf_counter() - start, 1)
    state["report"] = str(out / "report" / "report.md")
    write_json_atomic(state_path, state)
    return state


def stage_table(state: dict) -> str:
    """The per-stage wall times as a Markdown table."""
    rows = ["| stage | status | seconds |", "|---|---|---|"]
    rows += [f"| {name} | {s['status']} | {s['seconds']}"
             + (f" (earlier run: {s['earlier_seconds']})" if s.get("earlier_seconds") else "") + " |"
             for name, s in state["stages"].items()]
    rows.append(f"| total | | {state['total_seconds']} |")
    return "\n".join(rows)
