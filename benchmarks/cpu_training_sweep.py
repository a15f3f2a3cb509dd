"""Choose the cpu profile's training settings on the **validation** split (never the test sets).

Stage 1 with the course-written critic, stage 2's mixed pairs (rule labels), then SFT and DPO
variants; each model answers the validation prompts (red-team, borderline, helpful) greedily and
the refusal detector scores them. The rule the cpu profile follows: the most red-team refusals
among variants that refuse at most 15% of borderline and of helpful validation prompts.
Results are appended as JSON lines to benchmarks/results/cpu_training_sweep.jsonl and printed
as a table.

    python benchmarks/cpu_training_sweep.py --out runs/sweep --base \\
        --sft lr=3e-4,epochs=1,borderline=2 --dpo lr=5e-5,steps=48,sft=1
"""

import argparse
import json
import time
from pathlib import Path

from cai_utils import constitution as cons
from cai_utils.course_critic import write_course_arm
from cai_utils.data import project_root
from cai_utils.evaluation import held_out_sets, refusal_quality
from cai_utils.pipeline import stage1_items
from cai_utils.pairs import STRATA
from cai_utils.preferences import run_label
from cai_utils.devices import uses_cpu_bf16
from cai_utils.profiles import get_profile
from cai_utils.text_checks import is_refusal
from cai_utils.adapters import is_done
from cai_utils.training import train_dpo, train_sft


def parse(spec: str) -> dict:
    """'lr=2e-4,epochs=1,r=16,targets=all' -> {'lr': 0.0002, 'epochs': 1.0, 'r': 16.0, 'targets': 'all'}"""
    def value(v: str):
        try:
            return float(v)
        except ValueError:
            return v
    return {k: value(v) for k, v in (kv.split("=") for kv in spec.split(","))}


def lora(prof, spec: dict):
    """The profile with the LoRA rank, target modules (targets=all: every linear layer) and
    training seed a spec names."""
    r = int(spec.get("r", prof.lora_r))
    targets = "all-linear" if spec.get("targets") == "all" else prof.lora_target_modules
    return prof.replace(lora_r=r, lora_alpha=2 * r, lora_target_modules=targets,
                        train_seed=int(spec.get("seed", prof.train_seed)))


def name_of(kind: str, spec: dict) -> str:
    return kind + "-" + "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in spec.items())


def by_length(items: list[dict], refused: list[bool], parts: int = 4) -> list[list[int]]:
    """``[[refused, n], ...]`` per length quartile of the prompts (shortest first), in characters
    of every turn: whether refusals hold on short, blunt requests as on long ones."""
    ranked = sorted(zip((sum(len(m["content"]) for m in i["messages"]) for i in items), refused),
                    key=lambda pair: pair[0])
    cuts = [len(ranked) * k // parts for k in range(parts + 1)]
    return [[sum(r for _, r in ranked[a:b]), b - a] for a, b in zip(cuts, cuts[1:])]


def select_records(sft_data: Path, sft_folder: Path, how: str, prof) -> Path:
    """Stage-1 records for on-policy pair choices (tried on validation, not adopted; README):
    ``errors``: only the prompts the SFT model gets wrong (answers a red-team prompt, refuses a
    benign one) in its greedy first sentence; ``errors-harmful``: wrong red-team prompts, every
    benign one; ``benign-long``: every red-team prompt, and benign pairs whose prompt lengths
    follow the harmful ones' (the benign prompts are shorter). Returns the records' file."""
    from cai_utils.course_critic import with_needless_refusals
    from cai_utils.data import read_jsonl, write_jsonl_atomic
    from cai_utils.generation import HFGenerator, SamplingParams
    from cai_utils.models import load_for_inference
    from cai_utils.pairs import length_matched, pair_candidates
    from cai_utils.evaluation import REFUSAL_TOKENS

    records = read_jsonl(sft_data)
    if how == "benign-long":
        candidates = pair_candidates(with_needless_refusals(records), "mix")
        benign = length_matched([c for c in candidates if c["kind"] == "benign"],
                                round(prof.n_pairs * prof.benign_pair_share),
                                [c for c in candidates if c["kind"] == "harmful"])
        keep = {c["id"] for c in benign} | {r["id"] for r in records if r["set"] == "red_team"}
    elif how in ("errors", "errors-harmful"):
        cache = sft_data.parent / f"train-answers.{sft_folder.name}.jsonl"
        if not cache.is_file():
            model, tokenizer = load_for_inference(str(sft_folder), prof)
            outs = HFGenerator(model, tokenizer, batch_size=prof.batch_size, progress=False).chat(
                [r["prompt"] for r in records], SamplingParams(max_new_tokens=min(REFUSAL_TOKENS, prof.eval_max_new_tokens)))
            write_jsonl_atomic(cache, [{"id": r["id"], "set": r["set"], "answer": o.text} for r, o in zip(records, outs)])
        wrong = {a["id"] for a in read_jsonl(cache) if (a["set"] == "red_team") != is_refusal(a["answer"])}
        keep = wrong | ({r["id"] for r in records if r["set"] != "red_team"} if how == "errors-harmful" else set())
    else:
        raise ValueError(f"select must be errors, errors-harmful or benign-long, not {how!r}")
    path = sft_data.parent / f"sft-{how}.{sft_folder.name}.jsonl"
    write_jsonl_atomic(path, [r for r in records if r["id"] in keep])
    return path


def batch(item_id: str) -> str:
    """The hundreds digit of a prompt's number: 'rt-weapons-901' -> '9'."""
    number = item_id.rsplit("-", 1)[-1]
    return number[-3] if len(number) >= 3 else ""


def score(label: str, folder: Path, prof, log: Path, extra: dict, note: str | None = None) -> dict:
    start = time.perf_counter()
    q = refusal_quality(str(folder), prof, split="val")
    red = held_out_sets(prof, split="val")["red_team"]
    refused = [is_refusal(a) for a in q["answers"]["red_team"]]
    row = {"model": label, **extra, "bf16": uses_cpu_bf16(prof), "red_team_refused": q["red_team_declined"],
           "borderline_refused": 1 - q["borderline_answered"],
           "helpful_refused": 1 - q["helpful_answered"], "n": q["n"], "split": "val",
           "red_team_by_tactic": q["red_team_by_tactic"],
           "red_team_by_length": by_length(red, refused),
           # the validation batches by origin (README, Data): 8xx short prompts in the training
           # style, 9xx written blind from the category descriptions (acts no training prompt asks)
           **{f"red_team_{name}_batch": [sum(r for i, r in zip(red, refused) if batch(i["id"]) == b),
                                          sum(batch(i["id"]) == b for i in red)]
              for name, b in (("short", "8"), ("blind", "9"))},
           "eval_seconds": round(time.perf_counter() - start, 1),
           "answer_path": "answer_sets",  # rows before 2026-12-04: every set in one batch run, 48 tokens
           "train_prompts": [prof.n_red_team, prof.n_helpful, prof.n_borderline],
           **({"note": note} if note else {})}
    with log.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(f"{label:40s} red {row['red_team_refused']:.0%}  borderline {row['borderline_refused']:.0%}  "
          f"helpful {row['helpful_refused']:.0%}  (n={q['n']})", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--sft", nargs="+", default=["lr=2e-4,epochs=1"],
                    help="lr=..,epochs=..[,borderline=K][,helpful=K][,r=..,targets=all][,seed=TRAINING SEED]"
                         "[,sched=constant_with_warmup,warmup=0.05]")
    ap.add_argument("--dpo", nargs="*", default=[],
                    help="lr=..,steps=..[,beta=..][,sft=WEIGHT of an NLL term][,pairs=N,mix=BENIGN_SHARE,tactics=proportional|equal]"
                         "[,init=K: from the K-th --sft model, default the first]"
                         "[,select=errors|errors-harmful|benign-long: see select_records]"
                         "[,every=K: save every K steps, keep the checkpoint the rule picks on validation]"
                         "[,stop=0: with every=K, train every step instead of stopping at the first checkpoint within the rule]")
    ap.add_argument("--base", action="store_true", help="also score the base model")
    ap.add_argument("--note", default=None, help="recorded in every row this run writes (e.g. what data it trained on)")
    ap.add_argument("--prompts", default=None, metavar="RED,HELPFUL,BORDERLINE",
                    help="training prompts per set for stage 1 (all: the whole file); default the profile's")
    args = ap.parse_args()
    prof = get_profile(args.profile)
    if args.prompts:
        sizes = [None if n == "all" else int(n) for n in args.prompts.split(",")]
        prof = prof.replace(n_red_team=sizes[0], n_helpful=sizes[1], n_borderline=sizes[2])
    const = cons.load(project_root() / "constitutions" / "harmless-general.yaml")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = project_root() / "benchmarks" / "results" / "cpu_training_sweep.jsonl"
    sft_data, prefs = out / "sft.jsonl", out / "prefs.jsonl"
    if not sft_data.is_file():
        print(write_course_arm(const, stage1_items(prof), sft_data, prof.name))
    if args.base:
        score("base", prof.policy_model, prof, log, {"stage": "base"}, args.note)
    sft_folders = []
    for spec in map(parse, args.sft):
        folder = out / name_of("sft", spec)
        # borderline=K, helpful=K: each benign record of that set K times in the SFT mix
        p = lora(prof, spec).replace(sft=dict(learning_rate=spec["lr"], epochs=spec.get("epochs", 1.0),
                                     lr_scheduler=spec.get("sched", prof.sft.lr_scheduler),
                                     warmup=spec.get("warmup", prof.sft.warmup),
                                     repeat=tuple((s, int(spec[s])) for s in ("borderline", "helpful")
                                                      if s in spec)))
        sft_folders.append(folder)
        if not is_done(folder):  # a model trained earlier was scored then (see the log)
            r = train_sft(sft_data, folder, model=prof.policy_model, profile=p)
            print(f"{folder.name}: {r.steps} steps in {r.seconds}s")
            score(folder.name, folder, prof, log, {"stage": "sft", **spec}, args.note)
    for spec in map(parse, args.dpo):
        # the pair mix: how many pairs, and the share on benign prompts (answer over refusal)
        n_pairs, mix = int(spec.get("pairs", prof.n_pairs)), spec.get("mix", prof.benign_pair_share)
        tactics = spec.get("tactics", prof.pair_tactics)  # harmful pairs per tactic: proportional or equal
        init = sft_folders[int(spec.get("init", 0))]
        prefs = out / ("prefs.jsonl" if (n_pairs, mix, tactics) == (prof.n_pairs, prof.benign_pair_share,
                                                                    prof.pair_tactics)
                       else f"prefs-{n_pairs}-{mix:g}-{tactics}.jsonl")
        records = sft_data
        if "select" in spec:  # pairs chosen with the SFT model's help (on-policy)
            records = select_records(sft_data, init, spec["select"], prof)
            prefs = out / f"prefs-{spec['select']}.{init.name}.jsonl"
        if not prefs.is_file():
            print(run_label(const, records, prefs, profile=prof.replace(
                n_pairs=n_pairs, benign_pair_share=mix, pair_tactics=tactics)))
        folder = out / (init.name + "." + name_of("dpo", spec))
        p = lora(prof, spec).replace(dpo=dict(
                         learning_rate=spec["lr"], steps=int(spec["steps"]),
                         beta=spec.get("beta", prof.dpo.beta), epochs=None,
                         loss_types=("sigmoid", "sft") if spec.get("sft") else ("sigmoid",),
                         loss_weights=(1.0, spec["sft"]) if spec.get("sft") else None,
                         select_every=int(spec["every"]) if "every" in spec else None,
                         completion_tokens=int(spec["window"]) if "window" in spec else None,
                         stop_early=bool(spec.get("stop", 1))))
        if not is_done(folder):
            r = train_dpo(prefs, folder, init=init, profile=p)
            print(f"{folder.name}: {r.steps} steps in {r.seconds}s"
                  + (f", kept step {r.metrics['selected_step']}" if "selected_step" in r.metrics else ""))
        selection = folder / "checkpoints" / "selection.json"
        if selection.is_file():  # early stopping on validation: every checkpoint's figures
            spec = {**spec, "selection": json.loads(selection.read_text())}
        score(folder.name, folder, prof, log, {"stage": "dpo", "init_model": init.name,
                                               "pair_strata": list(STRATA), "pair_tactics": tactics,
                                               **{("nll" if k == "sft" else k): v for k, v in spec.items()}},
              args.note)


if __name__ == "__main__":
    main()
