"""Fast batched generation: left padding, length buckets, input order kept, per-item seeds.

Sampling is done row by row inside a logits processor, each row with its own
``torch.Generator`` seeded from the item's key, so an item's text does not depend on which batch
it landed in; greedy decoding in fp32 matches one-at-a-time generation. A generator is an object
with one obvious method, ``chat``, so tests can pass a fake and a vLLM backend can stand in.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Protocol

from tqdm.auto import tqdm


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # new tokens generated
    finished: bool  # ended with an end-of-turn token, not the token budget


class Generator(Protocol):
    def chat(self, conversations: list[list[dict]], params: SamplingParams,
             keys: list[str] | None = None, desc: str = "generating") -> list[Completion]:
        """Answer each conversation; ``keys`` seed each item (default: its position)."""


def item_seed(seed: int, key: str) -> int:
    """A 63-bit seed from a run seed and an item key, stable across runs and machines.

    >>> item_seed(0, "a") == item_seed(0, "a") != item_seed(1, "a")
    True
    """
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") >> 1


class _RowSampler:
    """Logits processor: samples each row with its own generator and returns one-hot scores,
    so greedy decoding after it takes exactly the sampled token."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device):
        import torch

        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > self.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        picked = torch.stack([torch.multinomial(probs[i], 1, generator=g)
                              for i, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, picked, 0.0)


class HFGenerator:
    """Batched ``generate`` for a transformers model and its (left-padding) tokenizer."""

    def __init__(self, model, tokenizer, batch_size: int = 8, progress: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress
        self.tokenizer.padding_side = "left"
        self.stats = {"items": 0, "new_tokens": 0, "seconds": 0.0}

    def render(self, conversation: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                  add_generation_prompt=True)

    def chat(self, conversations, params, keys=None, desc="generating"):
        texts = [self.render(c) for c in conversations]
        return self.complete(texts, params, keys, desc)

    def complete(self, texts: list[str], params: SamplingParams, keys: list[str] | None = None,
                 desc: str = "generating") -> list[Completion]:
        """Generate after raw prompt texts; results come back in input order."""
        keys = keys or [str(i) for i in range(len(texts))]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])  # buckets of similar length
        results: list[Completion | None] = [None] * len(texts)
        bar = tqdm(total=len(texts), desc=desc, unit="item", disable=not self.progress,
                   leave=False)
        start, new_tokens = time.perf_counter(), 0
        for at in range(0, len(order), self.batch_size):
            batch = order[at:at + self.batch_size]
            outs = self._generate([texts[i] for i in batch], params,
                                  [item_seed(params.seed, keys[i]) for i in batch])
            for i, out in zip(batch, outs):
                results[i] = out
                new_tokens += out.tokens
            bar.update(len(batch))
            elapsed = time.perf_counter() - start
            bar.set_postfix(tok_s=f"{new_tokens / max(elapsed, 1e-9):.0f}")
        bar.close()
        self.stats["items"] += len(texts)
        self.stats["new_tokens"] += new_tokens
        self.stats["seconds"] += time.perf_counter() - start
        return results

    def _generate(self, texts: list[str], params: SamplingParams, seeds: list[int]):
        import torch
        from transformers import LogitsProcessorList

        device = next(self.model.parameters()).device
        enc = self.tokenizer(texts, return_tensors="pt", padding=True,
                             add_special_tokens=False).to(device)
        processors = LogitsProcessorList()
        if params.temperature > 0:
            processors.append(_RowSampler(seeds, params.temperature, params.top_p, device))
        eos = self.model.generation_config.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(
                **enc, max_new_tokens=params.max_new_tokens, do_sample=False, num_beams=1,
                temperature=None, top_p=None, top_k=None, use_cache=True,
                repetition_penalty=params.repetition_penalty, logits_processor=processors,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos,
            )
        stop_ids = set(eos if isinstance(eos, list) else [eos])
        completions = []
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            kept = []
            for token in row:
                if token in stop_ids:
                    break
                kept.append(token)
            finished = len(kept) < len(row)
            text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
            completions.append(Completion(text=text, tokens=len(kept) + finished,
                                          finished=finished))
        return completions


class VLLMGenerator:
    """The same interface over vLLM, for CUDA machines that have it (``pip install vllm``).

    Not exercised in this repository's CI (no GPU there); per-request seeds keep the same
    batch-independence property as ``HFGenerator``.
    """

    def __init__(self, model_id: str, dtype: str = "auto", gpu_memory_utilization: float = 0.85):
        from vllm import LLM  # optional dependency

        self.llm = LLM(model=model_id, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization)
        self.tokenizer = self.llm.get_tokenizer()

    def chat(self, conversations, params, keys=None, desc="generating"):
        from vllm import SamplingParams as VSampling

        keys = keys or [str(i) for i in range(len(conversations))]
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        settings = [VSampling(max_tokens=params.max_new_tokens, temperature=params.temperature,
                              top_p=params.top_p, repetition_penalty=params.repetition_penalty,
                              seed=item_seed(params.seed, k)) for k in keys]
        outs = self.llm.generate(texts, settings, use_tqdm=True)
        return [Completion(text=o.outputs[0].text.strip(), tokens=len(o.outputs[0].token_ids),
                           finished=o.outputs[0].finish_reason == "stop") for o in outs]


def chat(model, tokenizer, message: str, max_new_tokens: int = 64) -> str:
    """One greedy answer to one user message: the simplest way to talk to a model."""
    gen = HFGenerator(model, tokenizer, batch_size=1, progress=False)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    return gen.chat([[{"role": "user", "content": message}]], params)[0].text
