"""``python -m cai_utils``: the pipeline headless. Each subcommand is a thin caller of the package.

Bad input (a missing file, an invalid constitution, a malformed JSONL line) is reported as one
line per problem on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from .profiles import DEFAULT_MODEL, get_profile, profile_names
from . import cli_data_stages, cli_model_stages


def _err(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def cmd_info(args) -> int:
    from .manifest import package_versions
    from .models import load_model, pick_device
    from .offline_model import cache_dir
    from .devices import inference_dtype, uses_cpu_bf16
    from .profiles import get_profile

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
    from .constitution import load
    from .constitution_diff import diff

    print(diff(load(args.old), load(args.new)))
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
    with_profile.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                              help="change one profile setting for this command (repeatable): "
                                   "--set max_length=512 --set dpo.beta=0.3 --set sft.learning_rate=1e-4; "
                                   "every name is in cai_utils/profile_schema.py")

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

    for add in cli_data_stages.COMMANDS + cli_model_stages.COMMANDS:
        add(sub, with_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .constitution import ConstitutionError
    from .data import DataError
    from .models import ModelNotFoundError

    args = build_parser().parse_args(argv)
    if getattr(args, "settings", None):  # --set: the named profile with those settings changed
        from .profile_schema import with_settings

        try:
            args.profile = with_settings(get_profile(args.profile), args.settings)
        except ValueError as err:
            return _err(str(err))
    try:
        return args.func(args)
    except (ConstitutionError, DataError, ModelNotFoundError) as err:
        return _err(str(err))
    except KeyboardInterrupt:
        return _err("interrupted: rerun the same command to resume")
