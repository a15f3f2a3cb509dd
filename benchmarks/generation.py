"""Stage-1 generation speed: the textbook's per-example loop against the batched engine.

The workload is stage 1's own: critique prompts for red-team training prompts, each carrying the
policy's real first answer (from the shipped stage-1 records) and one worked example of the
constitution, as ``critique.critique_revise`` builds them. Three arms on the same prompts, same
token budget, greedy, in one run: the per-example loop, the batched engine with plain left
padding, and the batched engine reading the shared worked example once per batch
(``HFGenerator(shared_prefix=...)``). Prints tokens/s, the ratios, and how many texts match the
loop's. ``--workload chat`` times plain one-message prompts instead (no shared worked example).

    python benchmarks/generation.py [--prompts 48] [--max-new-tokens 48] [--batch-size 48]
"""

import argparse
import time

import torch

import cai_utils as cai
from cai_utils import constitution as C
from cai_utils import prompts as P
from cai_utils.data import load_prompts, project_root, read_jsonl
from cai_utils.generation import HFGenerator, SamplingParams


def per_example_loop(model, tokenizer, conversations, max_new_tokens):
    """The naive baseline: one prompt at a time, one generate call each."""
    texts, tokens = [], 0
    for conversation in conversations:
        ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:]
        tokens += len(new)
        texts.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return texts, tokens


def critique_workload(n: int) -> list[list[dict]]:
    """Stage 1's critique prompts for the first ``n`` red-team records of the shipped data."""
    root = project_root()
    constitution = C.load(root / "constitutions" / "harmless-general.yaml")
    records = [r for r in read_jsonl(root / "data" / "sft" / "harmless-general.course-critic.jsonl")
               if r["set"] == "red_team"][:n]
    return [P.critique_messages(constitution, constitution.sample_principle(f"{r['id']}:0", 0),
                                r["prompt"], r["initial_response"], 1) for r in records]


def chat_workload(n: int) -> list[list[dict]]:
    root = project_root() / "data" / "prompts"
    items = (load_prompts(root / "red_team_train.jsonl", n // 2)
             + load_prompts(root / "helpful_train.jsonl", n - n // 2))
    return [item["messages"] for item in items]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["critique", "chat"], default="critique")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=48)
    args = parser.parse_args()

    conversations = (critique_workload if args.workload == "critique" else chat_workload)(args.prompts)
    model, tokenizer = cai.load_model("default")
    lengths = [len(tokenizer(tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                             add_special_tokens=False)["input_ids"]) for c in conversations]
    print(f"{args.workload} workload: {len(conversations)} prompts of {min(lengths)}-{max(lengths)} "
          f"tokens (mean {sum(lengths) / len(lengths):.0f}), {args.max_new_tokens} new tokens at "
          f"most, greedy, {model.dtype}, {torch.get_num_threads()} threads")
    params = SamplingParams(max_new_tokens=args.max_new_tokens)

    start = time.perf_counter()
    loop_texts, loop_tokens = per_example_loop(model, tokenizer, conversations, args.max_new_tokens)
    loop_s = time.perf_counter() - start
    print(f"per-example loop      : {loop_tokens:5d} tokens in {loop_s:6.1f}s = "
          f"{loop_tokens / loop_s:6.1f} tok/s")
    for name, shared in (("batched, left padding", None), ("batched, shared prefix", 64)):
        engine = HFGenerator(model, tokenizer, batch_size=args.batch_size, progress=False,
                             shared_prefix=shared)
        start = time.perf_counter()
        outs = engine.chat(conversations, params)
        seconds = time.perf_counter() - start
        tokens = sum(o.tokens for o in outs)
        same = sum(a == b.text for a, b in zip(loop_texts, outs))
        print(f"{name:22s}: {tokens:5d} tokens in {seconds:6.1f}s = {tokens / seconds:6.1f} tok/s "
              f"(batch {args.batch_size}); {(tokens / seconds) / (loop_tokens / loop_s):.1f}x the "
              f"loop's tokens/s, {loop_s / seconds:.1f}x its wall time; identical texts: "
              f"{same}/{len(outs)}; prefix tokens read once instead of per row: "
              f"{engine.stats['prefix_tokens_reused']}")


if __name__ == "__main__":
    main()
