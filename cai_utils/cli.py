"""``python -m cai_utils``: the pipeline headless. Each subcommand is a thin caller of the package.

Bad input (a missing file, an invalid constitution, a malformed JSONL line) is reported as one
line per problem on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from .profiles import DEFAULT_MODEL, get_profile, profile_names
from .workspace import DEFAULT_CONSTITUTION


def _err(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def cmd_info(args) -> int:
    from .data import package_versions
    from .models import cache_dir, load_model, pick_device
    from .profiles import get_profile, inference_dtype, uses_cpu_bf16

    profile = get_profile(args.profile)
    print(f"profile   {profile.name}: {profile.description}")
    print(f"device    {pick_device('auto')}")
    print(f"compute   answers and judging in {inference_dtype(profile)}, training "
          + ("with bf16 autocast over fp32 weights (the CPU has native bf16)" if uses_cpu_bf16(profile)
             else f"in {profile.dtype}"))
    print(f"policy    {profile.policy_model}  (critic {profile.model_for('critic')}, "
          f"judge {profile.model_for('judge')}, 4-bit {profile.load_in_4bit})")
    print(f"cache     {cache_dir()}")
    for name, ver in package_versions().items():
        print(f"  {name:<13} {ver}")
    if args.no_load:
        return 0
    start = time.perf_counter()
    model, _ = load_model(DEFAULT_MODEL)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"default model loads: SmolLM2-135M-Instruct ({params:.0f}M parameters) in "
          f"{seconds:.1f}s from {model.config.name_or_path}")
    return 0


def cmd_plan(args) -> int:
    from .sizing import DEVICES, device_for, plan_table

    profile = get_profile(args.profile)
    print(plan_table(profile, DEVICES[args.device] if args.device else device_for(profile)))
    return 0


def cmd_chat(args) -> int:
    from .generation import chat
    from .models import load_model

    model, tokenizer = load_model(args.model)
    print(chat(model, tokenizer, args.message, max_new_tokens=args.max_new_tokens))
    return 0


def cmd_validate(args) -> int:
    from .constitution import ConstitutionError, load

    failed = False
    for path in args.paths:
        try:
            print(f"ok  {path}: {load(path).summary()}")
        except ConstitutionError as err:
            failed = True
            print(str(err), file=sys.stderr)
    return 2 if failed else 0


def cmd_diff(args) -> int:
    from .constitution import diff, load

    print(diff(load(args.old), load(args.new)))
    return 0


def cmd_critique(args) -> int:
    from .critique import run_critique

    summary = run_critique(
        constitution=args.constitution, prompts=args.prompts, out=args.out, model=args.model,
        critic_model=args.critic_model, profile=args.profile, rounds=args.rounds,
        limit=args.limit[0] if args.limit and len(args.limit) == 1 else args.limit,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        seed=args.seed)
    print(summary)
    return 0


def cmd_label(args) -> int:
    from .preferences import run_label

    print(run_label(
        constitution=args.constitution, prompts=args.prompts, out=args.out, model=args.model,
        judge_model=args.judge_model, mode=args.mode, candidates=args.candidates,
        profile=args.profile, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
        label_source=args.label_source))
    return 0


def cmd_calibrate(args) -> int:
    from . import constitution as cons
    from .data import project_root
    from .models import load_for_inference
    from .judge import LogProbJudge, calibrate, calibration_sample, load_calibration
    from .profiles import get_profile

    profile = get_profile(args.profile)
    const = cons.load(args.constitution)
    rows = calibration_sample(load_calibration(args.pairs or project_root() / "data/calibration/pairs.jsonl",
                                               const), profile.calibration_pairs if args.limit is None else args.limit)
    name = args.judge_model or profile.model_for("judge")
    model, tokenizer = load_for_inference(name, profile)
    result = calibrate(LogProbJudge(model, tokenizer, batch_size=profile.batch_size), const, rows)
    print(f"judge {name} on {len(rows)} hand-labelled pairs ({const.name} {const.version}):")
    for kind in [k for k in result if k not in ("verdicts", "bias_towards_A")]:
        r = result[kind]
        print(f"  {kind:<7} agreement {r['agreement']:.1%} (95% CI {r['ci95'][0]:.1%}-"
              f"{r['ci95'][1]:.1%}, n={r['n']}), flips with the order {r['flip_rate']:.1%}, "
              f"mean margin {r['mean_margin']:.3f}")
    print(f"  mean P(A) whatever the content: {result['bias_towards_A']:.2f} (0.50 is unbiased)")
    return 0


def cmd_train(args) -> int:
    from . import rl, training
    from .data import load_prompts
    from .profiles import get_profile

    profile = get_profile(args.profile)
    # check the inputs before any model is loaded
    if args.stage in ("sft", "dpo", "reward"):
        training.load_records(args.data, args.stage)
    else:
        load_prompts(args.data)
        if not args.reward:
            return _err(f"train {args.stage} needs --reward DIR (a reward model from `train reward`)")
    if args.stage == "ppo" and profile.load_in_4bit:
        from .rl import PPO_NEEDS_FULL_VALUE_MODEL

        return _err(f"profile {profile.name}: {PPO_NEEDS_FULL_VALUE_MODEL}")
    for folder in filter(None, [args.init, args.reward]):
        training.adapter_base(folder)
    common = dict(max_steps=args.max_steps, profile=profile)
    if args.stage == "sft":
        result = training.train_sft(args.data, args.out, model=args.model or profile.policy_model,
                                    init=args.init, load_in_4bit=args.load_in_4bit, **common)
    elif args.stage == "dpo":
        result = training.train_dpo(args.data, args.out, model=args.model, init=args.init,
                                    load_in_4bit=args.load_in_4bit, **common)
    elif args.stage == "reward":
        result = rl.train_reward(args.data, args.out, model=args.model or profile.policy_model,
                                 init=args.init, load_in_4bit=args.load_in_4bit,
                                 soft_labels=args.soft_labels, **common)
    else:
        train = rl.train_ppo if args.stage == "ppo" else rl.train_grpo
        result = train(args.data, args.out, reward=args.reward, init=args.init, model=args.model,
                       **common)
    key = "loss/policy_avg" if args.stage == "ppo" else "loss"
    losses = [e[key] for e in result.log if key in e]
    trend = f", {key} {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else ""
    if args.merge and args.stage != "reward":
        from .training import save_merged

        print(f"merged model saved to {save_merged(result.out)}")
    print(f"{args.stage}: {result.steps} steps in {result.seconds}s{trend}, "
          f"{result.trainable_params:,} trainable parameters; saved to {result.out}"
          + "".join(f"; {k} {v:.4g}" if isinstance(v, float) else f"; {k} {v}"
                    for k, v in result.metrics.items()))
    return 0


def cmd_improve(args) -> int:
    from functools import partial

    from . import constitution as cons
    from .evaluation import refusal_quality
    from .profiles import get_profile
    from .improve import cai_round, self_improve

    profile = get_profile(args.profile)
    cons.load(args.constitution)  # a bad constitution fails here, before any model loads
    history = self_improve(
        partial(cai_round, constitution=args.constitution, out=args.out, profile=profile),
        lambda name: refusal_quality(name, profile)["quality"],
        start_model=args.model or profile.policy_model, rounds=args.rounds,
        tolerance=args.tolerance)
    for h in history:
        marks = " best" * bool(h.get("best")) + (f" stopped: {h['stopped']}" if h.get("stopped") else "")
        print(f"round {h['round']}: quality {h['quality']:.3f}  {h['model']}{marks}")
    return 0


def cmd_evaluate(args) -> int:
    from . import constitution as cons
    from .report import evaluate, model_labels
    from .report_text import summary_table, verdict_lines

    from .data import load_prompts

    cons.load(args.constitution)  # bad input fails here, before any model loads
    files = {name: path for name, path in (("red_team", args.red_team), ("borderline", args.borderline),
                                           ("helpful", args.helpful)) if path}
    for path in files.values():
        load_prompts(path)  # a missing or malformed prompt file fails here too
    models = model_labels(args.model or get_profile(args.profile).policy_model, args.adapter or [])
    report = evaluate(models, args.out, profile=args.profile, constitution=args.constitution,
                      limit=args.limit, judge_model=args.judge_model, files=files,
                      harmbench=not args.no_harmbench,
                      lm_eval_limit=args.lm_eval_limit if args.lm_eval_limit is not None else -1)
    print(summary_table(report))
    print("\n".join(verdict_lines(report)))
    print(f"report: {args.out}/report.md (and report.json, charts/*.png)")
    return 0


def cmd_run(args) -> int:
    from .pipeline import run_pipeline, stage_table

    profile = get_profile(args.profile)
    if args.critic:
        profile = profile.replace(critic=args.critic)
    state = run_pipeline(args.out, profile=profile, constitution=args.constitution)
    print(stage_table(state))
    print(f"report: {state['report']}")
    return 0


def cmd_ablate(args) -> int:
    from .pipeline import ablate

    result = ablate(args.constitution, args.out, args.principles, profile=args.profile,
                    n_prompts=args.prompts, sft_steps=args.steps, eval_limit=args.limit, seed=args.seed)
    for name, r in result["variants"].items():
        h = r["harmlessness"]
        d = r["vs_full"]
        print(f"{name:<40} harmlessness {h['mean']:.2f} [{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}] "
              f"(n={h['n']})  drop {r['drop_pct']:+.1f}%  paired change {d['diff']:+.3f} "
              f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    return 0


def cmd_infer_constitution(args) -> int:
    from .inverse import run_infer

    if args.top < 1:
        return _err("--top must be at least 1: a constitution needs a principle")
    print(run_infer(args.pairs, args.out, profile=args.profile, top_k=args.top, pool=args.pool,
                    limit=args.limit, judge_model=args.judge_model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cai_utils",
        description="Constitutional AI end to end: constitutions, critique-revision data, "
                    "RLAIF preferences, training and evaluation.")
    from .sizing import DEVICES  # profiles and arithmetic only: the CLI still starts without torch

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # options every stage shares, declared once (argparse parent parsers)
    with_profile = argparse.ArgumentParser(add_help=False)
    with_profile.add_argument("--profile", choices=profile_names(),
                              help=f"sizes and models ({', '.join(profile_names())}; default $CAI_PROFILE)")

    p = sub.add_parser("info", parents=[with_profile], help="profile, device, package versions, and whether the "
                                    "default model loads")
    p.add_argument("--no-load", action="store_true", help="skip loading the default model")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plan", parents=[with_profile], help="estimated minutes per stage and training "
                       "memory for a profile, before you run it (an estimate, not a measurement)")
    p.add_argument("--device", choices=list(DEVICES), help="default: the one the profile is written for")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("chat", help="one greedy answer from a model")
    p.add_argument("message")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("validate", help="check constitution files; exit 2 with one line per "
                                        "problem")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("diff", help="principles added, removed and changed between two "
                                    "constitutions")
    p.add_argument("old")
    p.add_argument("new")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("critique", parents=[with_profile], help="stage 1: critique-revision SFT data (resumable JSONL)")
    p.add_argument("--constitution", required=True)
    p.add_argument("--prompts", required=True, nargs="+", metavar="FILE",
                   help="JSONL prompt file(s): {id, prompt} or {id, messages} per line")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="answering model (default: the profile's policy)")
    p.add_argument("--critic-model", help="model that writes critiques and revisions "
                                          "(default: the answering model)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--limit", type=int, nargs="+", metavar="N",
                   help="at most N prompts from each file (one N, or one per file)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_critique)

    p = sub.add_parser("label", parents=[with_profile], help="stage 2: RLAIF preference pairs from a log-prob judge")
    p.add_argument("--constitution", required=True)
    p.add_argument("--prompts", required=True, metavar="FILE",
                   help="stage-1 records (candidates=revision) or a prompt file (samples)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="policy that samples candidates (default: the profile's)")
    p.add_argument("--judge-model", help="the judge (default: the profile's)")
    p.add_argument("--mode", choices=["sampled", "all"], help="one sampled principle per pair, "
                                                              "or every principle")
    p.add_argument("--candidates", choices=["mix", "revision", "samples"],
                   help="mix: revision vs first answer on harmful prompts and answer vs needless "
                        "refusal on benign ones; revision: the first kind only; samples: two "
                        "policy samples (default: the profile's)")
    p.add_argument("--label-source", choices=["judge", "rule"],
                   help="which labels train: the judge's, or the pair's construction (both are "
                        "recorded; default: the profile's)")
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("train", parents=[with_profile], help="stage 3: LoRA/QLoRA SFT, DPO, reward model, PPO or GRPO")
    p.add_argument("stage", choices=["sft", "dpo", "reward", "ppo", "grpo"])
    p.add_argument("--data", required=True, metavar="FILE",
                   help="stage-1 records (sft), stage-2 records (dpo, reward), prompts (ppo, grpo)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model", help="base model (default: the profile's policy, or the base of --init)")
    p.add_argument("--init", metavar="DIR", help="an earlier adapter to start from (SFT for dpo/ppo)")
    p.add_argument("--reward", metavar="DIR", help="the reward model, for ppo and grpo")
    p.add_argument("--load-in-4bit", action="store_true", default=None, help="QLoRA: NF4 base")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--merge", action="store_true",
                   help="also save the base with the adapter merged in, under OUT/merged")
    p.add_argument("--soft-labels", action="store_true", default=None,
                   help="reward: train on the judge's P(chosen) instead of 0/1 labels")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("improve", parents=[with_profile], help="iterative self-improvement: rounds of critique, label, "
                                       "SFT and DPO, stopping when quality drops")
    p.add_argument("--constitution", required=True)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--model", help="start model (default: the profile's policy)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="stop when quality falls more than this fraction (default 0.05)")
    p.set_defaults(func=cmd_improve)

    p = sub.add_parser("evaluate", parents=[with_profile], help="stage 4: harmlessness, refusals, helpfulness and the "
                                        "alignment tax into report.json, report.md and charts")
    p.add_argument("--model", help="the base model (default: the profile's policy)")
    p.add_argument("--adapter", nargs="+", metavar="DIR",
                   help="adapter folders from `train` (sft, dpo, ppo ...) to compare with it")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--limit", type=int, metavar="N", help="prompts per test set "
                                                          "(default: the profile's eval_prompts)")
    p.add_argument("--lm-eval-limit", type=int, metavar="N",
                   help="items per capability task (default: the profile's; 0 skips them)")
    for name, what in (("red-team", "harmful prompts to refuse"),
                       ("borderline", "safe prompts with alarming words"),
                       ("helpful", "ordinary prompts")):
        p.add_argument(f"--{name}", metavar="FILE",
                       help=f"a prompt file of {what}, in place of the shipped test set")
    p.add_argument("--no-harmbench", action="store_true",
                   help="leave out HarmBench's 159 standard behaviours")
    p.add_argument("--constitution", default=DEFAULT_CONSTITUTION)
    p.add_argument("--judge-model", help="default: the profile's judge")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("run", parents=[with_profile], help="the whole pipeline, resumable: validate, critique, label, "
                                   "SFT, DPO, reward, PPO, evaluate")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--constitution", default=DEFAULT_CONSTITUTION)
    p.add_argument("--critic", metavar="course|self|MODEL",
                   help="who writes stage 1's critiques and revisions: the course-written data "
                        "(harmless-general only), the policy itself, or a model id "
                        "(default: the profile's)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ablate", parents=[with_profile], help="drop one principle at a time, retrain briefly, and "
                                      "measure the fall in harmlessness")
    p.add_argument("--principles", required=True, nargs="+", metavar="ID")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--constitution", default=DEFAULT_CONSTITUTION)
    p.add_argument("--prompts", type=int, metavar="N", help="red-team prompts per variant")
    p.add_argument("--steps", type=int, metavar="N", help="SFT steps per variant")
    p.add_argument("--limit", type=int, metavar="N", help="held-out prompts to rate")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed; run again with others (into another --out) to see the spread")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("calibrate", parents=[with_profile], help="the judge's agreement with hand-labelled pairs")
    p.add_argument("--constitution", required=True)
    p.add_argument("--judge-model")
    p.add_argument("--pairs", help="default: data/calibration/pairs.jsonl")
    p.add_argument("--limit", type=int, metavar="N",
                   help="N pairs spread over the file (default: the profile's calibration_pairs; 0: all)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("infer-constitution", parents=[with_profile], help="inverse CAI: the few "
                       "principles (shipped and distractors) that best explain preference pairs")
    p.add_argument("--pairs", required=True, metavar="FILE",
                   help="preference pairs, {prompt, chosen, rejected} per line (stage 2's output)")
    p.add_argument("--out", required=True, metavar="FILE", help="the inferred constitution (YAML)")
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="at most K principles (default 5)")
    p.add_argument("--pool", nargs="+", metavar="FILE",
                   help="constitutions whose principles are the candidates (default: "
                        "constitutions/*.yaml and data/inverse/distractors.yaml)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="N pairs spread over the file (default: the profile's inverse_pairs; "
                        "0: all)")
    p.add_argument("--judge-model", help="default: the profile's judge")
    p.set_defaults(func=cmd_infer_constitution)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .constitution import ConstitutionError
    from .data import DataError
    from .models import ModelNotFoundError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConstitutionError, DataError, ModelNotFoundError) as err:
        return _err(str(err))
    except KeyboardInterrupt:
        return _err("interrupted: rerun the same command to resume")
