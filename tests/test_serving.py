"""The OpenAI-API generation client, against a stand-in server on this machine.

The stand-in speaks the fields vLLM's ``ChatCompletionRequest`` reads (``max_completion_tokens``,
``seed``, ``repetition_penalty``) and answers with the offline model through ``HFGenerator``, one
request at a time, so the client's texts can be checked against the in-process path's.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cai_utils.data import read_jsonl
from cai_utils.generation import HFGenerator, SamplingParams, item_seed
from cai_utils.manifest import read_manifest
from cai_utils.serving import GenerationServerError, ServerGenerator, engines_for, served_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(default_model):
    """``(url, bodies, auth)``: a server listing the model ``default``; ``bodies`` collects
    requests; with ``auth["key"]`` set, requests without that bearer key get HTTP 401."""
    model, tokenizer = default_model
    engine = HFGenerator(model, tokenizer, batch_size=1, progress=False)
    lock, bodies, auth = threading.Lock(), [], {"key": None}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def refused(self):
            if auth["key"] and self.headers.get("Authorization") != f"Bearer {auth['key']}":
                self.reply(401, {"error": {"message": "Unauthorized"}})
                return True
            return False

        def do_GET(self):
            if self.refused():
                return None
            if self.path == "/v1/models":
                return self.reply(200, {"object": "list", "data": [{"id": "default", "object": "model"}]})
            self.reply(404, {"error": {"message": "no such route"}})

        def do_POST(self):
            if self.refused():
                return None
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body.get("model") != "default":
                return self.reply(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
            params = SamplingParams(max_new_tokens=body["max_completion_tokens"],
                                    temperature=body["temperature"], top_p=body["top_p"],
                                    repetition_penalty=body["repetition_penalty"])
            with lock:
                bodies.append(body)
                out = engine.chat([body["messages"]], params)[0]
            self.reply(200, {"object": "chat.completion", "model": "default",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                                          "finish_reason": "stop" if out.finished else "length"}],
                             "usage": {"completion_tokens": out.tokens}})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1", bodies, auth
    httpd.shutdown()
    httpd.server_close()


CONVERSATIONS = [
    [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."},
     {"role": "user", "content": "Name a vegetable."}],
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "Say hello in French."}],
]


def test_server_answers_equal_the_in_process_engines_in_input_order(server, default_model):
    url, bodies, _ = server
    params = SamplingParams(max_new_tokens=12)
    client = ServerGenerator("default", url, workers=3, progress=False)
    got = client.chat(CONVERSATIONS, params, keys=["a", "b", "c"])
    want = HFGenerator(*default_model, batch_size=3, progress=False).chat(CONVERSATIONS, params)
    assert [g.text for g in got] == [w.text for w in want]
    assert [(g.tokens, g.finished) for g in got] == [(w.tokens, w.finished) for w in want]
    seeds = {json.dumps(b["messages"]): b["seed"] for b in bodies}
    assert [seeds[json.dumps(c)] for c in CONVERSATIONS] == [item_seed(0, k) for k in "abc"]
    assert {b["max_completion_tokens"] for b in bodies} == {12} and client.stats["items"] == 3
    # the model's own generation_config.json (Qwen's top_k=20) must not narrow the sampling
    assert {(b["top_k"], b["min_p"]) for b in bodies} == {(0, 0.0)}
    assert served_models(url) == ["default"]


@pytest.mark.slow
def test_stage1_answers_on_the_server_without_loading_the_model(server, tmp_path, monkeypatch, capsys):
    from cai_utils import critique, models

    url, bodies, _ = server
    monkeypatch.setenv("CAI_GENERATION_SERVER", url)
    monkeypatch.setattr(models, "load_for_inference", lambda *a, **k: pytest.fail("loaded a model"))
    out = tmp_path / "sft.jsonl"
    summary = critique.run_critique(ROOT / "constitutions" / "harmless-general.yaml",
                                    ROOT / "data" / "prompts" / "red_team_train.jsonl", out, limit=2)
    assert "2/2 records" in summary and f"generation server {url}: default served" in capsys.readouterr().out
    records = read_jsonl(out)
    assert len(records) == 2 and all(r["messages"][-1]["role"] == "assistant" for r in records)
    # per prompt: a first answer, then a critique and a revision per round
    assert len(bodies) == 2 * (1 + 2 * records[0]["generation"]["rounds"])
    assert read_manifest(out)["engines"] == {"default": [url]}
    # the system message the in-process engine renders, sent explicitly (the server's template
    # would otherwise add its model's own default)
    assert {b["messages"][0]["content"] for b in bodies if b["messages"][0]["role"] == "system"} \
        <= {*models.KEPT_SYSTEM_PROMPTS, *(r["messages"][0]["content"] for r in records)}
    assert all(b["messages"][0]["role"] == "system" for b in bodies)
    again = critique.run_critique(ROOT / "constitutions" / "harmless-general.yaml",
                                  ROOT / "data" / "prompts" / "red_team_train.jsonl", out, limit=2)
    assert "(0 new)" in again and read_manifest(out)["engines"] == {"default": [url]}  # kept


def test_the_server_gets_the_system_message_the_course_renders_in_process():
    from cai_utils import models
    from cai_utils.serving import system_text

    assert system_text("default") in models.KEPT_SYSTEM_PROMPTS  # the offline model's, kept
    # a model whose tokenizer cannot be read here gets the course's text (with the hub, load_tokenizer
    # would put the same text in place of Qwen2.5's "You are Qwen, ...")
    assert system_text("Qwen/Qwen2.5-1.5B-Instruct") == models.COURSE_SYSTEM_PROMPT


def test_an_unreachable_server_leaves_every_model_with_transformers():
    engines, line = engines_for(["default"], "http://127.0.0.1:9/v1")
    assert engines == {} and "cannot reach the server" in line and line.endswith("answering with transformers")
    assert engines_for(["default"], None) == ({}, "")


def test_a_server_error_is_one_line(server):
    url, _, _ = server
    with pytest.raises(GenerationServerError) as err:
        ServerGenerator("other", url, progress=False).chat(CONVERSATIONS[1:2], SamplingParams(max_new_tokens=4))
    message = str(err.value)
    assert "HTTP 404" in message and "`other` does not exist" in message and "\n" not in message


def test_the_servers_key_is_sent_with_every_request(server, monkeypatch):
    url, _, auth = server
    auth["key"] = "k-123"
    assert engines_for(["default"], url)[0] == {}  # no key: the listing is refused, transformers
    monkeypatch.setenv("CAI_GENERATION_SERVER_KEY", "k-123")
    engines, _ = engines_for(["default"], url)
    answer = engines["default"].chat(CONVERSATIONS[1:2], SamplingParams(max_new_tokens=4))
    assert len(answer) == 1 and answer[0].tokens > 0
