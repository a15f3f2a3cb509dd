"""Generation on a server that speaks the OpenAI chat API: vLLM's ``vllm serve``, or SGLang, TGI
or llama.cpp's server.

Teams that outgrow one process run generation on an engine built for it: continuous batching,
a prefix cache shared across requests (stage 1's worked example is read once per server, not
once per batch), tensor parallelism. vLLM cannot live in this course's environment (its newest
release pins an older transformers), so it runs in its own environment or container and the
course talks to it over HTTP. Point ``CAI_GENERATION_SERVER`` at its base URL
(``http://localhost:8000/v1``); stage 1 then answers, critiques and revises with every model the
server lists under ``/models`` and loads the others with transformers, as without a server.

``ServerGenerator`` has the same ``chat`` method as ``HFGenerator``: requests go out in parallel
(the server batches them), answers come back in input order, and each item's sampling seed is
``item_seed(seed, key)``, so an item's text does not depend on which requests ran beside it.
Request and response fields follow vLLM's ``ChatCompletionRequest`` (``max_completion_tokens``,
``seed``, ``repetition_penalty``; ``finish_reason`` and ``usage.completion_tokens`` back).
"""

from __future__ import annotations

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
    """GET (no payload) or POST JSON; retries a refused connection, not an error answer."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = None if payload is None else json.dumps(payload).encode()
    for attempt in range(tries):
        try:
            request = urllib.request.Request(url, data=data, headers=headers)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")[:300].replace("\n", " ")
            raise GenerationServerError(f"{url}: HTTP {err.code}: {body}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if attempt == tries - 1:
                reason = getattr(err, "reason", err)
                raise GenerationServerError(f"{url}: cannot reach the server ({reason})") from None
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def served_models(url: str | None = None, timeout: float = 5.0) -> list[str]:
    """The model ids a server lists under ``/models``."""
    base = server_url(url)
    if base is None:
        raise GenerationServerError(f"no server: pass a URL or set {ENV}")
    return [m["id"] for m in _call(f"{base}/models", timeout=timeout, tries=1).get("data", [])]


class ServerGenerator:
    """``chat`` over a server's ``/chat/completions``, ``workers`` requests in flight."""

    def __init__(self, model: str, url: str | None = None, workers: int = 32,
                 timeout: float = 600.0, progress: bool = True):
        self.url = server_url(url)
        if self.url is None:
            raise GenerationServerError(f"no server: pass a URL or set {ENV}")
        self.model, self.workers, self.timeout, self.progress = model, workers, timeout, progress
        self.api_key = os.environ.get("CAI_GENERATION_SERVER_KEY")
        self.stats = {"items": 0, "new_tokens": 0, "seconds": 0.0}

    def payload(self, conversation: list[dict], params: SamplingParams, key: str) -> dict:
        """One request's body.

        >>> g = ServerGenerator("m", url="http://x/v1")
        >>> body = g.payload([{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=8), "a")
        >>> body["max_completion_tokens"], body["temperature"], body["seed"] == item_seed(0, "a")
        (8, 0.0, True)
        """
        return {"model": self.model, "messages": conversation,
                "max_completion_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p,
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
        bodies = [self.payload(c, params, k) for c, k in zip(conversations, keys)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(bodies)))) as pool:
            results = list(tqdm(pool.map(self._one, bodies), total=len(bodies), desc=desc,
                                unit="item", disable=not self.progress, leave=False))
        self.stats["items"] += len(results)
        self.stats["new_tokens"] += sum(r.tokens for r in results)
        self.stats["seconds"] += time.perf_counter() - start
        return results


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
    engines = {name: ServerGenerator(name, base) for name in dict.fromkeys(names) if name in served}
    rest = [n for n in dict.fromkeys(names) if n not in engines]
    line = f"generation server {base}: " + ", ".join(
        [f"{n} served" for n in engines] + [f"{n} not listed (transformers)" for n in rest])
    return engines, line
