"""An OpenAI-compatible `/v1/chat/completions` fake on 127.0.0.1 that misbehaves on purpose.

Every request is answered according to a *plan*: a function of the request (its index, the role the
prompt asks for, its body and headers) returning the name of a fault, or None for a healthy reply.

    with FaultServer(plan=by_role(guideline="500")) as server:
        lm = local_lm(server.url, "fault-large", num_retries=2, timeout=1.0)
        ...
        server.faults   # Counter({"500": 3})

Faults (the names a plan returns):
    "timeout"    sleep `hang` seconds before answering (past the client's timeout)
    "500"        HTTP 500 with an OpenAI-style error body
    "429"        HTTP 429 with a Retry-After header (`retry_after`, seconds)
    "401"        HTTP 401 whose body echoes the request's Authorization header (a careless provider)
    "403"        HTTP 403: the key may not use this model
    "404"        HTTP 404 "model not found" (OpenAI's body; Ollama's /v1 answers the same for a model not pulled)
    "truncated"  HTTP 200 whose JSON body is cut off half-way (Content-Length matches the cut body)
    "empty"      HTTP 200, a valid completion whose content is ""
    "prose"      HTTP 200, a reply in the wrong format: prose with no DSPy field markers and no answer
    "huge"       HTTP 200, a reply about 1 MB long (padding prose, no field markers, no answer)
    "cut"        HTTP 200, a reply cut off at max_tokens (finish_reason "length") mid-solution, where the
                 last number readable ("4") is not the answer
A refused connection is a closed port: see `closed_port_url()`.

A healthy reply is in DSPy's chat format for the role the prompt asks for (goal, guideline, or an
execution whose answer is `answer`), with the scripted usage `usage` (prompt, completion tokens).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("timeout", "500", "429", "401", "403", "404", "truncated", "empty", "prose", "huge", "cut")
PROSE = "I'm sorry, but I can't help with that request. Please consult a qualified tutor."
HUGE_BYTES = 1_000_000


@dataclass
class Request:
    index: int  # 0-based, in arrival order
    role: str  # "goal", "guideline" or "execute" (read from the system prompt)
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def plans(self) -> str:
        user = "\n".join(str(m.get("content") or "") for m in self.body.get("messages", []) if m.get("role") == "user")
        m = re.search(r"\[\[ ## plans ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", user, re.S)
        return m.group(1).strip() if m else ""


Plan = Callable[[Request], "str | None"]


# -- plans ------------------------------------------------------------------------------------------------


def healthy(_: Request) -> None:
    return None


def always(fault: str) -> Plan:
    _check(fault)
    return lambda req: fault


def first(k: int, fault: str) -> Plan:
    """The first k requests fail with `fault`, the rest are healthy (a transient fault)."""
    _check(fault)
    return lambda req: fault if req.index < k else None


def every(k: int, fault: str) -> Plan:
    """Every k-th request (indices 0, k, 2k, ...) fails with `fault`."""
    _check(fault)
    return lambda req: fault if req.index % k == 0 else None


def by_role(**faults: str) -> Plan:
    """A fault per role, e.g. by_role(guideline="500", execute="prose"); other roles are healthy."""
    for f in faults.values():
        _check(f)
    return lambda req: faults.get(req.role)


def _check(fault: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; faults are {FAULTS}")


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def reply(**fields: str) -> str:
    body = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items())
    return body + "[[ ## completed ## ]]"


# -- the server -------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # listen() backlog: hundreds of concurrent clients must not be refused


class FaultServer:
    """Context manager: the fake on a free 127.0.0.1 port. Counters are thread-safe.

    answer: the answer a healthy execution gives (a callable of the Request, or a string).
    usage: (prompt_tokens, completion_tokens) every healthy reply reports.
    hang: seconds a "timeout" request sleeps (the server wakes it early when it shuts down).
    retry_after: the Retry-After header of a 429 or 500, in seconds (a string); None sends none.
    """

    def __init__(
        self,
        plan: Plan = healthy,
        *,
        answer: str | Callable[[Request], str] = "7",
        usage: tuple[int, int] = (100, 20),
        hang: float = 3.0,
        retry_after: str | None = "0",
    ):
        self.plan, self.answer, self.usage = plan, answer, usage
        self.hang, self.retry_after = hang, retry_after
        self.requests = 0
        self.ok = 0
        self.faults: Counter[str] = Counter()
        self.roles: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle
    def __enter__(self) -> FaultServer:
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True, name="fault-server").start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "use FaultServer as a context manager"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def injected(self) -> int:
        with self._lock:
            return sum(self.faults.values())

    # -- replies
    def _content(self, req: Request) -> str:
        if req.role == "goal":
            return reply(goal="Find the total number of apples.")
        if req.role == "guideline":
            return reply(guideline="Add the two amounts together.")
        answer = self.answer(req) if callable(self.answer) else self.answer
        return reply(solution=f"3 + 4 gives \\boxed{{{answer}}}.", answer=answer)

    def _completion(self, body: dict, content: str, usage: tuple[int, int] | None = None,
                    finish_reason: str = "stop") -> dict:
        prompt, completion = usage or self.usage
        return {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": 1735732800,
            "model": body.get("model", "fault"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }

    def _retry_header(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": self.retry_after}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart (delayed ACK)

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None,
                      length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                self._send(status, json.dumps(payload).encode(), headers)

            def do_POST(self):  # noqa: N802 (http.server's naming)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return self._json(400, {"error": {"message": "invalid JSON body"}})
                system = "\n".join(str(m.get("content") or "") for m in body.get("messages", [])
                                   if m.get("role") == "system")
                role = "goal" if "`goal`" in system else "guideline" if "`guideline`" in system else "execute"
                with fake._lock:
                    req = Request(fake.requests, role, body, dict(self.headers.items()))
                    fake.requests += 1
                    fake.roles[role] += 1
                fault = fake.plan(req)
                with fake._lock:
                    if fault is None:
                        fake.ok += 1
                    else:
                        fake.faults[fault] += 1
                try:
                    self._answer(fault, req, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): that is the point of the fault

            def _answer(self, fault: str | None, req: Request, body: dict) -> None:
                if fault is None:
                    return self._json(200, fake._completion(body, fake._content(req)))
                if fault == "timeout":
                    fake._stop.wait(fake.hang)
                    return self._json(200, fake._completion(body, fake._content(req)))
                if fault == "500":
                    return self._json(500, {"error": {"message": "The server had an error while processing "
                                                                 "your request.", "type": "server_error"}},
                                      fake._retry_header())
                if fault == "429":
                    return self._json(429, {"error": {"message": "Rate limit reached for requests.",
                                                      "type": "requests", "code": "rate_limit_exceeded"}},
                                      fake._retry_header())
                if fault == "401":
                    auth = self.headers.get("Authorization", "")
                    return self._json(401, {"error": {"message": f"Incorrect API key provided: {auth}. You can "
                                                                 "find your API key at https://example.invalid.",
                                                      "type": "invalid_request_error",
                                                      "code": "invalid_api_key"}})
                if fault == "403":
                    return self._json(403, {"error": {"message": "You are not allowed to use this model.",
                                                      "type": "permission_error"}})
                if fault == "404":
                    model = body.get("model", "")
                    return self._json(404, {"error": {"message": f"The model `{model}` does not exist or you do "
                                                                 "not have access to it.",
                                                      "type": "invalid_request_error", "code": "model_not_found"}})
                if fault == "truncated":
                    data = json.dumps(fake._completion(body, fake._content(req))).encode()
                    cut = data[: len(data) // 2]
                    return self._send(200, cut)
                if fault == "empty":
                    return self._json(200, fake._completion(body, ""))
                if fault == "prose":
                    return self._json(200, fake._completion(body, PROSE))
                if fault == "huge":
                    pad = "This reply goes on and on without ever reaching a conclusion. "
                    text = pad * (HUGE_BYTES // len(pad) + 1)
                    return self._json(200, fake._completion(body, text, (100, 250_000)))
                if fault == "cut":
                    cut = "[[ ## solution ## ]]\nFirst count the apples: Tom starts with 3, then buys 4"
                    return self._json(200, fake._completion(body, cut, finish_reason="length"))
                raise AssertionError(fault)

        return Handler
