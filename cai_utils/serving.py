"""Generation on a vLLM server (``vllm serve``), through the OpenAI chat API it speaks.

Teams that outgrow one process run generation on an engine built for it: continuous batching,
a prefix cache shared across requests (stage 1's worked example is read once per server, not
once per batch), tensor parallelism. vLLM cannot live in this course's environment (its newest
release pins an older transformers), so it runs in its own environment or container and the
course talks to it over HTTP. Point ``CAI_GENERATION_SERVER`` at its base URL
(``http://localhost:8000/v1``; ``CAI_GENERATION_SERVER_KEY`` if it was started with
``--api-key``); stage 1 then answers, critiques and revises with every model the server lists
under ``/models`` and loads the others with transformers, as without a server.

``ServerGenerator`` has the same ``chat`` method as ``HFGenerator``: requests go out in parallel
(the server batches them), answers come back in input order, and each item's sampling seed is
``item_seed(seed, key)`` (vLLM's kernels are not batch-invariant by default, so a text can still
differ with what ran beside it). Request and response fields follow vLLM's
``ChatCompletionRequest``: ``max_completion_tokens``, ``seed``, ``repetition_penalty``, and
``top_k=0`` and ``min_p=0`` so that the model's own ``generation_config.json`` (Qwen2.5's
``top_k=20``) does not narrow the sampling the profile records; ``finish_reason`` and
``usage.completion_tokens`` come back. Other servers with this API may work; only vLLM's fields
were checked.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from .generation import Completion, SamplingParams, item_seed

ENV = "CAI_GENERATION_SERVER"


class GenerationServerError(RuntimeError):
    """The server answered with an error, or could not be reached."""


def server_url(url: str | None = None) -> str | None:
    """The base URL in use: ``url``, else ``$CAI_GENERATION_SERVER``, without a trailing slash.

    >>> server_url("http://localhost:8000/v1/")
    'http://localhost:8000/v1'
    """
    url = url or os.environ.get(ENV) or None
    return url.rstrip("/") if url else None


def _call(url: str, payload: dict | None = None, timeout: float = 600.0,
          api_key: str | None = None, tries: int = 3) -> dict:
    """GET (no payload) or POST JSON. A refused connection is tried again (a server starting
    up); an error answer, a timeout or a body that is not JSON is one line at once."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = None if payload is None else json.dumps(payload).encode()
    for attempt in range(tries):
        try:
            request = urllib.request.Request(url, data=data, headers=headers)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:  # before URLError, its parent class
            body = err.read().decode(errors="replace")[:300].replace("\n", " ")
            raise GenerationServerError(f"{url}: HTTP {err.code}: {body}") from None
        except (TimeoutError, json.JSONDecodeError, http.client.HTTPException) as err:
            raise GenerationServerError(f"{url}: {type(err).__name__}: {err}") from None
        except (urllib.error.URLError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError):
                raise GenerationServerError(f"{url}: timed out after {timeout:g} s") from None
            if attempt == tries - 1:
                raise GenerationServerError(f"{url}: cannot reach the server ({reason})") from None
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def _api_key() -> str | None:
    return os.environ.get("CAI_GENERATION_SERVER_KEY") or None


def served_models(url: str | None = None, timeout: float = 5.0) -> list[str]:
    """The model ids a server lists under ``/models``."""
    base = server_url(url)
    if base is None:
        raise GenerationServerError(f"no server: pass a URL or set {ENV}")
    listing = _call(f"{base}/models", timeout=timeout, api_key=_api_key(), tries=1)
    return [m["id"] for m in listing.get("data", [])]


class ServerGenerator:
    """``chat`` over a server's ``/chat/completions``, ``workers`` requests in flight."""

    def __init__(self, model: str, url: str | None = None, workers: int = 64,
                 timeout: float = 600.0, progress: bool = True, system: str | None = None):
        """``system``: sent as the system message of a conversation without one (``system_text``),
        so that the server's chat template adds no default of its own."""
        self.url = server_url(url)
        self.system = system
        if self.url is None:
            raise GenerationServerError(f"no server: pass a URL or set {ENV}")
        self.model, self.workers, self.timeout, self.progress = model, workers, timeout, progress
        self.api_key = _api_key()
        self.stats = {"items": 0, "new_tokens": 0, "seconds": 0.0}

    def payload(self, conversation: list[dict], params: SamplingParams, key: str) -> dict:
        """One request's body.

        >>> g = ServerGenerator("m", url="http://x/v1")
        >>> body = g.payload([{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=8), "a")
        >>> body["max_completion_tokens"], body["temperature"], body["seed"] == item_seed(0, "a")
        (8, 0.0, True)
        >>> ServerGenerator("m", url="http://x/v1", system="Be kind.").payload(
        ...     [{"role": "user", "content": "hi"}], SamplingParams(), "a")["messages"][0]
        {'role': 'system', 'content': 'Be kind.'}
        """
        if self.system is not None and conversation[:1] and conversation[0]["role"] != "system":
            conversation = [{"role": "system", "content": self.system}, *conversation]
        return {"model": self.model, "messages": conversation,
                "max_completion_tokens": params.max_new_tokens,
                "max_tokens": params.max_new_tokens,  # for servers that know only the older name
                "temperature": params.temperature, "top_p": params.top_p, "top_k": 0, "min_p": 0.0,
                "repetition_penalty": params.repetition_penalty,
                "seed": item_seed(params.seed, key)}

    def _one(self, body: dict) -> Completion:
        answer = _call(f"{self.url}/chat/completions", body, self.timeout, self.api_key)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise GenerationServerError(f"{self.url}: an answer without choices[0].message: "
                                        f"{json.dumps(answer)[:200]}") from None
        tokens = (answer.get("usage") or {}).get("completion_tokens", 0)
        return Completion(text=text.strip(), tokens=tokens, finished=choice.get("finish_reason") == "stop")

    def chat(self, conversations, params, keys=None, desc="generating"):
        keys = keys or [str(i) for i in range(len(conversations))]
        if len(keys) != len(conversations):
            raise ValueError(f"{len(keys)} keys for {len(conversations)} conversations")
        bodies = [self.payload(c, params, k) for c, k in zip(conversations, keys)]
        start = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(bodies))))
        try:
            futures = [pool.submit(self._one, body) for body in bodies]
            results = [f.result() for f in tqdm(futures, desc=desc, unit="item",
                                                disable=not self.progress, leave=False)]
        finally:  # one failed request: the queued ones are not sent
            pool.shutdown(wait=True, cancel_futures=True)
        self.stats["items"] += len(results)
        self.stats["new_tokens"] += sum(r.tokens for r in results)
        self.stats["seconds"] += time.perf_counter() - start
        return results


def system_text(model: str) -> str | None:
    """The system message the course's own rendering gives ``model``'s conversations without one
    (``models.load_tokenizer``: the course's text, or a default it keeps; None: the template adds
    none). Sent explicitly, since the server renders with the model's own template."""
    from .models import COURSE_SYSTEM_PROMPT, ModelNotFoundError, default_system_prompt, load_tokenizer

    try:
        return default_system_prompt(load_tokenizer(model))
    except ModelNotFoundError:  # no tokenizer here to read: the course's text
        return COURSE_SYSTEM_PROMPT


def engines_for(names: list[str], url: str | None = None) -> tuple[dict[str, "ServerGenerator"], str]:
    """A ``ServerGenerator`` for each of ``names`` the server lists, and one line saying which
    models it serves and which stay with transformers (empty without a server). A server that
    cannot be reached is said so, and every model stays with transformers."""
    base = server_url(url)
    if base is None:
        return {}, ""
    try:
        served = set(served_models(base))
    except GenerationServerError as err:
        return {}, f"generation server: {err}; answering with transformers"
    engines = {name: ServerGenerator(name, base, system=system_text(name))
               for name in dict.fromkeys(names) if name in served}
    rest = [n for n in dict.fromkeys(names) if n not in engines]
    line = f"generation server {base}: " + ", ".join(
        [f"{n} served" for n in engines] + [f"{n} not listed (transformers)" for n in rest])
    return engines, line
