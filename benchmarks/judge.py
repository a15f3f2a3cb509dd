"""Stage-2 judge speed: log-prob A/B in one forward pass against generating a verdict as text.

Same model, same hand-labelled pairs, both orders, both batched, in one run. Prints pairs per
second of both, the ratio, how often the text judge's answer could not be parsed, and each
judge's agreement with the hand labels.

    python benchmarks/judge.py [--pairs 32] [--batch-size 16] [--max-new-tokens 8]
"""

import argparse
import re
import time

import cai_utils as cai
from cai_utils import constitution as cons
from cai_utils import prompts
from cai_utils.data import project_root
from cai_utils.generation import HFGenerator, SamplingParams
from cai_utils.judge import LogProbJudge, judge_pairs, load_calibration

LETTER = re.compile(r"\(?\b([AB])\b\)?")


def text_judge(generator, constitution, rows, max_new_tokens):
    """Generate a verdict as text and parse the first A or B; None when there is neither."""
    questions = []
    for r in rows:
        conv = [{"role": "user", "content": r["prompt"]}]
        principle = constitution.principle(r["principle"])
        questions += [prompts.judge_messages(principle, conv, r["preferred"], r["other"]),
                      prompts.judge_messages(principle, conv, r["other"], r["preferred"])]
    outs = generator.chat(questions, SamplingParams(max_new_tokens=max_new_tokens))
    letters = [(m.group(1) if (m := LETTER.search(o.text)) else None) for o in outs]
    verdicts = []
    for first, second in zip(letters[::2], letters[1::2]):
        votes = [v for v in ((first == "A") if first else None, (second == "B") if second else None)
                 if v is not None]
        verdicts.append(None if not votes else sum(votes) / len(votes))
    return verdicts, letters


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    root = project_root()
    constitution = cons.load(root / "constitutions/harmless-general.yaml")
    rows = load_calibration(root / "data/calibration/pairs.jsonl", constitution)[:args.pairs]
    model, tokenizer = cai.load_model("default")
    print(f"{len(rows)} hand-labelled pairs, both orders, batch {args.batch_size}")

    judge = LogProbJudge(model, tokenizer, batch_size=args.batch_size, progress=False)
    start = time.perf_counter()
    verdicts = judge_pairs(judge, [([{"role": "user", "content": r["prompt"]}], r["preferred"],
                                    r["other"]) for r in rows],
                           [[constitution.principle(r["principle"])] for r in rows])
    logprob_s = time.perf_counter() - start
    logprob_right = sum(v.p_first > 0.5 for v in verdicts)

    generator = HFGenerator(model, tokenizer, batch_size=args.batch_size, progress=False)
    start = time.perf_counter()
    text_verdicts, letters = text_judge(generator, constitution, rows, args.max_new_tokens)
    text_s = time.perf_counter() - start
    unparsed = sum(letter is None for letter in letters)
    text_right = sum(v is not None and v > 0.5 for v in text_verdicts)

    n = len(rows)
    print(f"log-prob judge : {n / logprob_s:6.2f} pairs/s ({logprob_s:5.1f}s); "
          f"agrees with the hand label on {logprob_right}/{n}")
    print(f"text judge     : {n / text_s:6.2f} pairs/s ({text_s:5.1f}s); "
          f"agrees on {text_right}/{n}; unparseable answers {unparsed}/{2 * n}")
    print(f"speed-up       : {text_s / logprob_s:.1f}x")


if __name__ == "__main__":
    main()
