"""The commands of ``python -m cai_utils`` that train and measure models: ``train`` (stage 3),
``improve``, ``evaluate`` (stage 4), ``run`` (every stage) and ``ablate``. Each command's function
sits beside the one that declares its options (``add_<command>``); ``COMMANDS`` lists them.
"""

from __future__ import annotations

from .data import DataError
from .profiles import get_profile
from .workspace import DEFAULT_CONSTITUTION


def cmd_train(args) -> int:
    from . import adapters, rl, training
    from .data import load_prompts

    profile = get_profile(args.profile)
    if args.seed is not None:
        profile = profile.replace(train_seed=args.seed)
    if args.select_every is not None:
        if args.stage != "dpo":
            raise DataError("--select-every chooses a DPO checkpoint on validation: use it with `train dpo`")
        profile = profile.replace(dpo={"select_every": args.select_every or None})
    # check the inputs before any model is loaded
    if args.stage in ("sft", "dpo", "reward"):
        training.load_records(args.data, args.stage)
    else:
        load_prompts(args.data)
        if not args.reward:
            raise DataError(f"train {args.stage} needs --reward DIR (a reward model from `train reward`)")
    if args.stage == "ppo" and profile.load_in_4bit:
        from .rl import PPO_NEEDS_FULL_VALUE_MODEL

        raise DataError(f"profile {profile.name}: {PPO_NEEDS_FULL_VALUE_MODEL}")
    for folder in filter(None, [args.init, args.reward]):
        adapters.adapter_base(folder)
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
    from .devices import is_main_process

    if args.merge and args.stage != "reward" and is_main_process():
        from .adapters import save_merged

        print(f"merged model saved to {save_merged(result.out)}")
    print(f"{args.stage}: {result.steps} steps in {result.seconds}s{trend}, "
          f"{result.trainable_params:,} trainable parameters; saved to {result.out}"
          + "".join(f"; {k} {v:.4g}" if isinstance(v, float) else f"; {k} {v}"
                    for k, v in result.metrics.items()))
    return 0


def add_train(sub, with_profile) -> None:
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
    p.add_argument("--seed", type=int, help="training seed (LoRA initialisation, data order; default the profile's)")
    p.add_argument("--select-every", type=int, metavar="K",
                   help="dpo: save a checkpoint every K steps and keep the one the over-refusal rule "
                        "picks on the validation prompts (0: keep the last step; default the profile's)")
    p.add_argument("--merge", action="store_true",
                   help="also save the base with the adapter merged in, under OUT/merged")
    p.add_argument("--soft-labels", action="store_true", default=None,
                   help="reward: train on the judge's P(chosen) instead of 0/1 labels")
    p.set_defaults(func=cmd_train)


def cmd_improve(args) -> int:
    from functools import partial

    from . import constitution as cons
    from .evaluation import refusal_quality
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


def add_improve(sub, with_profile) -> None:
    p = sub.add_parser("improve", parents=[with_profile], help="iterative self-improvement: rounds of critique, label, "
                                       "SFT and DPO, stopping when quality drops")
    p.add_argument("--constitution", required=True)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--model", help="start model (default: the profile's policy)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="stop when quality falls more than this fraction (default 0.05)")
    p.set_defaults(func=cmd_improve)


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


def add_evaluate(sub, with_profile) -> None:
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


def cmd_run(args) -> int:
    from .pipeline import run_pipeline, stage_table

    profile = get_profile(args.profile)
    if args.critic:
        profile = profile.replace(critic=args.critic)
    state = run_pipeline(args.out, profile=profile, constitution=args.constitution)
    print(stage_table(state))
    print(f"report: {state['report']}")
    return 0


def add_run(sub, with_profile) -> None:
    p = sub.add_parser("run", parents=[with_profile], help="the whole pipeline, resumable: validate, critique, label, "
                                   "SFT, DPO, reward, PPO, evaluate")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--constitution", default=DEFAULT_CONSTITUTION)
    p.add_argument("--critic", metavar="course|self|MODEL",
                   help="who writes stage 1's critiques and revisions: the course-written data "
                        "(harmless-general only), the policy itself, or a model id "
                        "(default: the profile's)")
    p.set_defaults(func=cmd_run)


def cmd_ablate(args) -> int:
    from .ablation import ablate

    result = ablate(args.constitution, args.out, args.principles, profile=args.profile,
                    n_prompts=args.prompts, sft_steps=args.steps, eval_limit=args.limit, seed=args.seed)
    for name, r in result["variants"].items():
        h = r["harmlessness"]
        d = r["vs_full"]
        print(f"{name:<40} harmlessness {h['mean']:.2f} [{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}] "
              f"(n={h['n']})  drop {r['drop_pct']:+.1f}%  paired change {d['diff']:+.3f} "
              f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    return 0


def add_ablate(sub, with_profile) -> None:
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


COMMANDS = (add_train, add_improve, add_evaluate, add_run, add_ablate)  # in the order --help lists them
