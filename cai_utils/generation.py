"""Fast batched generation: left padding, length buckets, a shared prefix computed once per batch,
input order kept, per-item seeds.

Sampling is done row by row inside a logits processor, each row with its own
``torch.Generator`` seeded from the item's key, so an item's text does not depend on which batch
it landed in; greedy decoding in fp32 matches one-at-a-time generation.

Stage 1's critique and revision prompts repeat the same worked example (and the chat template's
system prompt) before each item's own text. Conversations with the same history before their
last message are batched together, and a batch's longest common token prefix is run once, at
batch size 1, and its key/value cache copied to every row; each row's own tokens follow after
padding placed between prefix and suffix (positions come from the attention mask, so each row
sees the same positions as alone). A generator is an object
with one obvious method, ``chat``, so tests can pass a fake and a generation server can stand
in (``serving.ServerGenerator``: vLLM and other engines that speak the OpenAI chat API).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
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


def batch_groups(groups: list[str], min_size: int) -> list[str]:
    """Keep a group only if it has at least ``min_size`` members; the rest share one group, so
    one-off histories (multi-turn test prompts) still fill batches.

    >>> batch_groups(["a", "a", "b", "a"], 2)
    ['a', 'a', '', 'a']
    """
    sizes = collections.Counter(groups)
    return [g if sizes[g] >= min_size else "" for g in groups]


def common_prefix_length(rows: list[list[int]]) -> int:
    """How many leading tokens every row shares.

    >>> common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    """
    first = rows[0]
    n = min(len(row) for row in rows)
    for i in range(n):
        if any(row[i] != first[i] for row in rows):
            return i
    return n


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

    def __init__(self, model, tokenizer, batch_size: int = 8, progress: bool = True,
                 shared_prefix: int | None = 64):
        """``shared_prefix``: reuse a batch's common prefix when it is at least this many tokens
        (``None``: never)."""
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress
        self.shared_prefix = shared_prefix
        self.tokenizer.padding_side = "left"
        self.stats = {"items": 0, "new_tokens": 0, "seconds": 0.0, "prefix_tokens_reused": 0}

    def render(self, conversation: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                  add_generation_prompt=True)

    def chat(self, conversations, params, keys=None, desc="generating"):
        texts = [self.render(c) for c in conversations]
        # only a history before the last message (worked examples) is worth a group of its
        # own; single messages keep the plain length order, so their batches are as before
        histories = [repr(c[:-1]) if len(c) > 1 else "" for c in conversations]
        return self.complete(texts, params, keys, desc, groups=histories)

    def complete(self, texts: list[str], params: SamplingParams, keys: list[str] | None = None,
                 desc: str = "generating", groups: list[str] | None = None) -> list[Completion]:
        """Generate after raw prompt texts; results come back in input order. Texts of one
        ``group`` (``chat``: the same history before the last message) are batched together."""
        keys = keys or [str(i) for i in range(len(texts))]
        groups = batch_groups(groups or [""] * len(texts), max(2, self.batch_size // 4))
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        # one group after another, buckets of similar length inside each
        order = sorted(range(len(texts)), key=lambda i: (groups[i], lengths[i]))
        batches = []  # no batch spans two groups
        for group in itertools.groupby(order, key=lambda i: groups[i]):
            members = list(group[1])
            batches += [members[at:at + self.batch_size]
                        for at in range(0, len(members), self.batch_size)]
        results: list[Completion | None] = [None] * len(texts)
        bar = tqdm(total=len(texts), desc=desc, unit="item", disable=not self.progress,
                   leave=False)
        start, new_tokens = time.perf_counter(), 0
        for batch in batches:
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

    def _encode(self, texts: list[str], device, new_tokens: int = 0) -> dict:
        """Token ids and attention mask for one batch: left padding, or, when the rows share a
        prefix of at least ``shared_prefix`` tokens, that prefix once as a key/value cache and
        the padding between it and each row's own tokens."""
        import torch

        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        shared = min(common_prefix_length(ids), min(len(row) for row in ids) - 1)
        if (self.shared_prefix is None or len(ids) < 2 or shared < max(1, self.shared_prefix)
                or not self._can_share(max(len(row) for row in ids) + new_tokens)):
            return dict(self.tokenizer(texts, return_tensors="pt", padding=True,
                                       add_special_tokens=False).to(device))
        prefix = torch.tensor([ids[0][:shared]], device=device)
        with torch.inference_mode():
            cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(len(ids))
        width = max(len(row) for row in ids) - shared
        pad = self.tokenizer.pad_token_id
        rows, masks = [], []
        for row in ids:
            own = row[shared:]
            gap = width - len(own)
            rows.append(row[:shared] + [pad] * gap + own)
            masks.append([1] * shared + [0] * gap + [1] * len(own))
        self.stats["prefix_tokens_reused"] += shared * (len(ids) - 1)
        return {"input_ids": torch.tensor(rows, device=device),
                "attention_mask": torch.tensor(masks, device=device), "past_key_values": cache}

    def _can_share(self, longest: int) -> bool:
        """Whether a prefix cache may be handed to ``generate``: not when the model asks for its
        own cache (``cache_implementation``, e.g. Gemma 2), trains, or has a sliding attention
        window the padding gap could push tokens out of."""
        config = self.model.config
        window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
        return (getattr(self.model.generation_config, "cache_implementation", None) is None
                and not self.model.training and not (window and window < longest))

    def _generate(self, texts: list[str], params: SamplingParams, seeds: list[int]):
        import torch
        from transformers import LogitsProcessorList

        device = next(self.model.parameters()).device
        enc = self._encode(texts, device, params.max_new_tokens)
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


def chat(model, tokenizer, message: str, max_new_tokens: int = 64) -> str:
    """One greedy answer to one user message: the simplest way to talk to a model."""
    gen = HFGenerator(model, tokenizer, batch_size=1, progress=False)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    return gen.chat([[{"role": "user", "content": message}]], params)[0].text
