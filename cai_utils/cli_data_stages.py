"""The commands of ``python -m cai_utils`` that make and check data: ``critique`` (stage 1),
``label`` (stage 2), ``calibrate`` (the judge against hand labels) and ``infer-constitution``
(inverse CAI). Each command's function sits beside the one that declares its options
(``add_<command>``); ``COMMANDS`` lists them. ``cli_model_stages.py`` has the commands that
train and measure models, ``cli.py`` the general ones and ``main``.
"""

from __future__ import annotations

from .data import DataError


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


def add_critique(sub, with_profile) -> None:
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


def cmd_label(args) -> int:
    from .preferences import run_label

    print(run_label(
        constitution=args.constitution, prompts=args.prompts, out=args.out, model=args.model,
        judge_model=args.judge_model, mode=args.mode, candidates=args.candidates,
        profile=args.profile, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
        label_source=args.label_source))
    return 0


def add_label(sub, with_profile) -> None:
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


def add_calibrate(sub, with_profile) -> None:
    p = sub.add_parser("calibrate", parents=[with_profile], help="the judge's agreement with hand-labelled pairs")
    p.add_argument("--constitution", required=True)
    p.add_argument("--judge-model")
    p.add_argument("--pairs", help="default: data/calibration/pairs.jsonl")
    p.add_argument("--limit", type=int, metavar="N",
                   help="N pairs spread over the file (default: the profile's calibration_pairs; 0: all)")
    p.set_defaults(func=cmd_calibrate)


def cmd_infer_constitution(args) -> int:
    from .inverse import run_infer

    if args.top < 1:
        raise DataError("--top must be at least 1: a constitution needs a principle")
    print(run_infer(args.pairs, args.out, profile=args.profile, top_k=args.top, pool=args.pool,
                    limit=args.limit, judge_model=args.judge_model))
    return 0


def add_infer_constitution(sub, with_profile) -> None:
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


COMMANDS = (add_critique, add_label, add_calibrate, add_infer_constitution)  # in the order --help lists them
