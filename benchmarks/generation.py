"""Stage-1 generation speed: the textbook's per-example loop against the batched engine.

Same model, same prompts, same token budget, greedy, in one run; prints tokens/s of both and
the ratio, and checks that both wrote the same text.

    python benchmarks/generation.py [--prompts 48] [--max-new-tokens 48] [--batch-size 48]
"""

import argparse
import time

import torch

import cai_utils as cai
from cai_utils.data import load_prompts, project_root
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=48)
    args = parser.parse_args()

    root = project_root() / "data" / "prompts"
    half = args.prompts // 2
    items = (load_prompts(root / "red_team_train.jsonl", half)
             + load_prompts(root / "helpful_train.jsonl", args.prompts - half))
    conversations = [item["messages"] for item in items]
    model, tokenizer = cai.load_model("default")
    print(f"{len(items)} prompts, {args.max_new_tokens} new tokens at most, greedy, "
          f"{torch.get_num_threads()} threads")

    start = time.perf_counter()
    naive_texts, naive_tokens = per_example_loop(model, tokenizer, conversations,
                                                 args.max_new_tokens)
    naive_s = time.perf_counter() - start

    engine = HFGenerator(model, tokenizer, batch_size=args.batch_size, progress=False)
    start = time.perf_counter()
    outs = engine.chat(conversations, SamplingParams(max_new_tokens=args.max_new_tokens))
    engine_s = time.perf_counter() - start
    engine_tokens = sum(o.tokens for o in outs)

    same = sum(a == b.text for a, b in zip(naive_texts, outs))
    naive_rate, engine_rate = naive_tokens / naive_s, engine_tokens / engine_s
    print(f"per-example loop : {naive_tokens:5d} tokens in {naive_s:6.1f}s = {naive_rate:6.1f} tok/s")
    print(f"batched engine   : {engine_tokens:5d} tokens in {engine_s:6.1f}s = {engine_rate:6.1f} tok/s"
          f" (batch {args.batch_size})")
    print(f"speed-up         : {engine_rate / naive_rate:.1f}x tokens/s, "
          f"{naive_s / engine_s:.1f}x wall time; identical texts: {same}/{len(items)}")


if __name__ == "__main__":
    main()
