"""prompts generate: an OpenAI-compatible endpoint served locally, each failure its own test."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clipmpcad.errors import PromptError
from clipmpcad.prompt_generation import ChatEndpoint, generate_prompt_set
from clipmpcad.prompts import load_prompt_set

NORMAL = [f"a healthy panoramic radiograph with intact tooth number {i}" for i in range(1, 36)]
ABNORMAL = [f"a carious lesion visible on tooth number {i}" for i in range(1, 36)]


def chat_answer(content: str) -> bytes:
    """A chat-completions response body whose message is ``content``."""
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }
    ).encode()


def model_reply(**obj) -> str:
    reply = {"domain": "medical", "classname": "dental radiograph", "normal": NORMAL, "abnormal": ABNORMAL} | obj
    return "Here you are:\n```json\n" + json.dumps(reply, indent=1) + "\n```\n"


class ChatServer:
    """A local chat-completions server; ``answer`` is (status, body, delay in seconds)."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes, float] = (200, chat_answer(model_reply()), 0.0)
        self.requests: list[dict] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                status, payload, delay = server.answer
                if delay and server.release.wait(delay):
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must not go through a proxy set in the environment."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def server():
    chat = ChatServer()
    yield chat
    chat.close()


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def endpoint(server: ChatServer, timeout_s: float = 5.0) -> ChatEndpoint:
    return ChatEndpoint.resolve(base_url=server.url, model="test-model", api_key="sk-test", timeout_s=timeout_s)


def test_a_good_answer_writes_a_valid_prompt_set(server, out_dir):
    out = out_dir / "Dental X-ray.json"
    assert generate_prompt_set("dental panoramic radiographs", out, endpoint=endpoint(server), n=35) == out
    prompt_set = load_prompt_set(out)
    assert prompt_set.name == "dental_x_ray" and prompt_set.domain == "medical"
    assert prompt_set.classname == "dental radiograph" and prompt_set.dataset == "custom"
    assert list(prompt_set.normal) == NORMAL and list(prompt_set.abnormal) == ABNORMAL
    provenance = prompt_set.provenance
    assert provenance["model"] == "test-model" and provenance["reviewed"] is False
    assert provenance["base_url_host"] == server.url.split("/")[2]
    assert "dental panoramic radiographs" in provenance["instruction"]
    assert "sk-test" not in out.read_text(encoding="utf-8")
    assert "sk-test" not in repr(endpoint(server))
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["body"]["model"] == "test-model"
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]
    assert "35 sentences" in request["body"]["messages"][1]["content"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["Dental X-ray.json"]


def test_repeats_are_dropped_and_options_override_the_model(server, out_dir):
    repeated = [*NORMAL, "A healthy panoramic radiograph with intact tooth number 1 "]
    server.answer = (
        200,
        chat_answer(
            json.dumps({"domain": "industrial", "classname": "tooth", "normal": repeated, "abnormal": ABNORMAL})
        ),
        0.0,
    )
    out = generate_prompt_set("teeth", out_dir / "t.json", endpoint=endpoint(server), kind="medical", classname="jaw")
    prompt_set = load_prompt_set(out)
    assert len(prompt_set.normal) == len(NORMAL)
    assert prompt_set.domain == "medical" and prompt_set.classname == "jaw"


def test_the_endpoint_comes_from_the_environment(server, out_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    generate_prompt_set("teeth", out_dir / "env.json")
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-env"
    assert server.requests[0]["body"]["model"] == "env-model"


def test_a_missing_model_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    with pytest.raises(PromptError, match="pass --model or set OPENAI_MODEL"):
        ChatEndpoint.resolve(base_url="http://127.0.0.1:1/v1")


FAILURES = {
    "malformed JSON": (
        (200, chat_answer("normal: a healthy tooth; abnormal: a caries"), 0.0),
        r"the model's reply is not a JSON object: 'normal: a healthy tooth",
    ),
    "not a chat answer": ((200, b"<html>gateway</html>", 0.0), r"did not answer with JSON: '<html>gateway</html>'"),
    "no choices": ((200, b'{"error": "quota"}', 0.0), r"answered without choices"),
    "missing key": (
        (200, chat_answer(json.dumps({"domain": "medical", "normal": NORMAL})), 0.0),
        r"the model's JSON lacks 'abnormal'",
    ),
    "wrong types": (
        (200, chat_answer(model_reply(normal="teeth")), 0.0),
        r"the model's 'normal' is not a list of strings",
    ),
    "too few": (
        (200, chat_answer(model_reply(abnormal=ABNORMAL[:12])), 0.0),
        r"12 distinct abnormal sentences .*at least 30 are needed",
    ),
    "too few after repeats": (
        (200, chat_answer(model_reply(normal=NORMAL[:20] * 2)), 0.0),
        r"20 distinct normal sentences",
    ),
    "sentences too long": (
        (
            200,
            chat_answer(model_reply(abnormal=[*ABNORMAL[:-1], "a carious lesion " + "spreading very far " * 30])),
            0.0,
        ),
        r"1 sentences exceed CLIP's 77-token context .*'a carious lesion spreading very far.*"
        r"\(\d+ tokens\)",
    ),
    "wrong placeholder": (
        (200, chat_answer(model_reply(normal=[*NORMAL, "a {} tooth"])), 0.0),
        r"fails the schema: normal\[35\] uses the placeholder \{\}",
    ),
    "bad domain": (
        (200, chat_answer(model_reply(domain="dental")), 0.0),
        r"'domain' is 'dental'.*pass --kind medical or --kind industrial",
    ),
    "HTTP 500": (
        (500, b'{"error": {"message": "upstream exploded"}}', 0.0),
        r"chat/completions answered HTTP 500: .*upstream exploded",
    ),
    "HTTP 401": ((401, b"invalid key", 0.0), r"answered HTTP 401 \(check --api-key"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_each_failure_is_one_clear_error_and_leaves_no_file(server, out_dir, case):
    server.answer, message = FAILURES[case]
    with pytest.raises(PromptError, match=message) as caught:
        generate_prompt_set("teeth", out_dir / "teeth.json", endpoint=endpoint(server))
    assert "\n" not in str(caught.value)
    assert list(out_dir.iterdir()) == []


def test_a_timeout_is_reported_and_leaves_no_file(server, out_dir):
    server.answer = (200, chat_answer(model_reply()), 10.0)
    start = time.monotonic()
    with pytest.raises(PromptError, match=r"did not answer within 0.5 s \(timed out\)"):
        generate_prompt_set("teeth", out_dir / "teeth.json", endpoint=endpoint(server, 0.5))
    assert time.monotonic() - start < 5
    assert list(out_dir.iterdir()) == []


def test_a_refused_connection_is_reported(out_dir):
    with socket.socket() as probe:  # a port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = ChatEndpoint.resolve(base_url=f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(PromptError, match="connection refused"):
        generate_prompt_set("teeth", out_dir / "teeth.json", endpoint=refused)
    assert list(out_dir.iterdir()) == []


def test_an_existing_file_is_kept_unless_overwrite(server, out_dir):
    out = out_dir / "teeth.json"
    out.write_text("keep me", encoding="utf-8")
    with pytest.raises(PromptError, match=r"teeth\.json exists; pass --overwrite"):
        generate_prompt_set("teeth", out, endpoint=endpoint(server))
    assert out.read_text(encoding="utf-8") == "keep me"
    assert server.requests == []  # refused before asking
    generate_prompt_set("teeth", out, endpoint=endpoint(server), overwrite=True)
    assert load_prompt_set(out).normal[0] == NORMAL[0]
    assert sorted(p.name for p in out_dir.iterdir()) == ["teeth.json"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(n=29), "n must be between 30 and 200"),
        (dict(kind="agricultural"), "kind 'agricultural' must be one of medical, industrial"),
    ],
)
def test_bad_arguments_fail_before_any_request(server, out_dir, arguments, message):
    with pytest.raises(PromptError, match=message):
        generate_prompt_set("teeth", out_dir / "t.json", endpoint=endpoint(server), **arguments)
    assert server.requests == []


def test_a_folder_as_out_and_an_endless_timeout_fail_before_any_request(server, out_dir):
    with pytest.raises(PromptError, match="is a folder; give the prompt-set file"):
        generate_prompt_set("teeth", out_dir, endpoint=endpoint(server), overwrite=True)
    with pytest.raises(PromptError, match="timeout must be a finite number"):
        ChatEndpoint.resolve("http://127.0.0.1:1/v1", "m", None, float("inf"))
    assert server.requests == []


def test_the_answer_is_found_among_reasoning_and_prose_with_braces():
    from clipmpcad.prompt_generation import parse_answer

    good = {"normal": ["a flawless {classname}"], "abnormal": ["a cracked {classname}"]}
    replies = [
        "<think>the user wants {classname} in each sentence; maybe ```json {} ```</think>" + json.dumps(good),
        "Here it is:\n" + json.dumps(good) + "\nEvery sentence keeps {classname} as asked.",
        "```json\n" + json.dumps(good) + "\n```\nNote: {classname} is filled in later.",
    ]
    for reply in replies:
        assert parse_answer(reply) == good
    with pytest.raises(PromptError, match="lacks 'abnormal'"):
        parse_answer('{"normal": ["x"]} and nothing else')
