"""COPE behind an OpenAI-compatible HTTP endpoint: `/v1/chat/completions`, `/v1/models` and `/health`.

    import uvicorn
    from cope_dspy.server import create_app

    app = create_app(cascade, model_name="cope", api_key=os.environ.get("COPE_API_KEY"))   # a Starlette app
    uvicorn.run(app, host="127.0.0.1", port=8000)          # `cope serve --cascade ...` does this for you

Any OpenAI client then uses the cascade as the model "cope". Needs the serve extra:
`pip install "cope-dspy[serve]"`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
import traceback
import uuid
from typing import Any, Literal

import dspy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .cascade import Cascade
from .costs import Usage
from .errors import (
    BudgetExceeded,
    CopeError,
    CopeInputError,
    LargeModelError,
    ModelUnavailable,
    SmallModelError,
)
from .redact import redact

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # the library works without the serve extra; only this module needs it
    raise ImportError("cope_dspy.server needs the serve extra: pip install 'cope-dspy[serve]'") from exc

logger = logging.getLogger("cope_dspy.server")

MAX_BODY_BYTES = 8 * 1024 * 1024
COST_HEADER = "x-cope-cost-usd"
LOOPBACK_NAMES = ("localhost",)


# ------------------------------------------------------------------------------------- the request


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls...: accepted, not used

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value
        ):
            return value
        raise ValueError(
            "content must be a string or a list of text parts ({'type': 'text', 'text': ...}); "
            "images, audio and files are not supported"
        )

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields the server reads. Sampling settings (temperature, top_p, max_tokens, seed, stop...) are
    accepted and not used: the cascade's policy sets each role's temperature and its LMs' reply caps."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1
    cope: dict[str, Any] = Field(default_factory=dict)  # further task inputs, e.g. {"tests": [...]} for Code


class RequestError(Exception):
    """A request the server answers with an error in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def parse_request(body: bytes, model_name: str) -> ChatRequest:
    """The request, checked: a JSON object with the served model's name and a question to answer."""
    try:
        request = ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise RequestError(400, f"the body is not valid JSON ({first['msg']})") from None
        param = _param(first["loc"])
        problem = {"missing": "is required", "too_short": "must hold at least one message"}.get(
            first["type"], first["msg"].removeprefix("Value error, ")
        )
        raise RequestError(400, f"invalid request: {param or 'the body'}: {problem}", param=param) from None
    if request.model != model_name:
        raise RequestError(
            404,
            f"the model {request.model!r} does not exist here; this server serves "
            f"{model_name!r} (GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    if request.n not in (None, 1):
        raise RequestError(
            400, f"n must be 1: the cascade gives one decided answer, got n={request.n}", param="n"
        )
    extra = request.model_extra or {}
    unused = {"tools": [], "functions": [], "tool_choice": "none", "response_format": {"type": "text"}}
    for name, harmless in unused.items():
        if extra.get(name) not in (None, harmless):
            raise RequestError(
                400, f"{name} is not supported: the reply is the cascade's answer as plain text", param=name
            )
    return request


def _param(loc: tuple) -> str | None:
    """pydantic's error location as OpenAI's `param`: messages[0].content."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ChatRequest.model_fields or part in Message.model_fields or not out:
            out += f".{part}" if out else str(part)
    return out or None


def question_of(messages: list[Message]) -> str:
    """The last user message is the question; earlier turns come before it as context, so the planners and
    executors of every stage see them (a prefix of the question: the cascade's signatures stay the same)."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise RequestError(
            400, "messages holds no user message: the last user message is the question", param="messages"
        )
    if last != len(messages) - 1:
        raise RequestError(
            400,
            f"the last message must be the user's question; messages after it "
            f"({messages[-1].role}) are not supported",
            param="messages",
        )
    question = messages[last].text().strip()
    if not question:
        raise RequestError(
            400, "the last user message is empty: it is the question", param=f"messages[{last}].content"
        )
    context = [f"{m.role}: {m.text().strip()}" for m in messages[:last] if m.text().strip()]
    if not context:
        return question
    return "Context (earlier turns of the conversation):\n" + "\n".join(context) + f"\n\nQuestion: {question}"


# ------------------------------------------------------------------------------------- the app


def create_app(
    cascade: Cascade,
    *,
    model_name: str = "cope",
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    """An ASGI app serving `cascade` as the model `model_name`, OpenAI-style.

    Requests run concurrently (`Cascade.acall`) and share the cascade's `Budget`, if it has one. With
    `api_key`, every `/v1` request needs `Authorization: Bearer <api_key>` (401 otherwise, before any work);
    `/health` is always open and tells nothing but that the server is up.
    """
    if not isinstance(cascade, Cascade):
        raise CopeInputError(f"create_app needs a cope_dspy.Cascade, got {cascade!r}")
    if api_key is not None and (not isinstance(api_key, str) or not api_key):
        raise CopeInputError("api_key must be a non-empty string, or None for no authentication")
    started = int(time.time())

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise RequestError(
                401,
                "missing or wrong API key: send the server's key as 'Authorization: Bearer "
                "<key>' (OpenAI(api_key=...))",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )

    async def chat_completions(request: Request) -> Response:
        try:
            authorize(request)
            chat = parse_request(await read_body(request, max_body_bytes), model_name)
            question = question_of(chat.messages)
            if cascade.task.input_field in chat.cope:
                raise RequestError(
                    400,
                    f"cope.{cascade.task.input_field} is not allowed: the question is the last user message",
                    param=f"cope.{cascade.task.input_field}",
                )
            inputs = {**chat.cope, cascade.task.input_field: question}
        except RequestError as error:
            return error.response()
        return await answer(inputs, chat)

    async def answer(inputs: dict[str, Any], chat: ChatRequest) -> Response:
        try:
            pred = await cascade.acall(**inputs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped error, logged
            error = _error_for(exc, api_key)
            if isinstance(getattr(exc, "cost", None), Usage):  # what it paid before it failed
                error.headers[COST_HEADER] = _usd(exc.cost.usd)
            return error.response()
        reply = completion(pred, model_name)
        headers = {COST_HEADER: _usd(reply["cope"]["cost_usd"])}
        if not chat.stream:
            return JSONResponse(reply, headers=headers)
        usage = chat.stream_options is not None and chat.stream_options.include_usage
        return StreamingResponse(
            sse(reply, usage),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )

    async def models(request: Request) -> Response:
        try:
            authorize(request)
        except RequestError as error:
            return error.response()
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": model_name,
                        "object": "model",
                        "created": started,
                        "owned_by": "cope-dspy",
                        "cope": describe(cascade),
                    },
                ],
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return RequestError(
            exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=str(exc.status_code)
        ).response()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413, OpenAI-shaped) past `limit` bytes without reading the rest. Starlette's own
    `max_body_size` answers in plain text, which OpenAI clients cannot read."""
    too_large = RequestError(413, f"the request body is larger than this server accepts ({limit:,} bytes)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _error_for(exc: Exception, api_key: str | None) -> RequestError:
    """The HTTP answer to a cascade that raised. Retrying would not help any of these, so clients are told
    not to (the OpenAI SDK reads `x-should-retry`)."""
    message = redact(str(exc), [api_key])
    no_retry = {"x-should-retry": "false"}
    if isinstance(exc, BudgetExceeded):
        return RequestError(
            429, message, type="insufficient_quota", code="insufficient_quota", headers=no_retry
        )
    if isinstance(exc, CopeInputError):
        return RequestError(400, message, param="cope")
    if isinstance(exc, LargeModelError):
        return RequestError(502, message, type="server_error", code="large_model_error", headers=no_retry)
    if isinstance(exc, ModelUnavailable):
        return RequestError(503, message, type="server_error", code="model_unavailable", headers=no_retry)
    if isinstance(exc, SmallModelError):  # a broken small model: the large one was not paid to cover for it
        return RequestError(503, message, type="server_error", code="small_model_error", headers=no_retry)
    if isinstance(exc, CopeError):
        return RequestError(500, message, type="server_error", code=type(exc).__name__, headers=no_retry)
    logger.error("the cascade failed: %s", redact(traceback.format_exc(), [api_key]))
    return RequestError(
        500,
        f"internal error ({type(exc).__name__}); the server log has the traceback",
        type="server_error",
        code="internal_error",
        headers=no_retry,
    )


# ------------------------------------------------------------------------------------- the reply


def completion(pred: dspy.Prediction, model_name: str) -> dict[str, Any]:
    """OpenAI's chat.completion, with `usage` summed over every call the cascade made and a `cope` object."""
    total = pred.cost
    content = pred.answer if pred.answer is not None else (pred.solution or "")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "total_tokens": total.total_tokens,
        },
        "cope": {
            "stage": pred.stage,
            "confidence": pred.confidence,
            "accepted": pred.accepted,
            "budget_limited": pred.budget_limited,
            "plans": pred.plans,
            "calls": total.calls,
            "cached_calls": total.cached_calls,
            "unpriced_calls": total.unpriced_calls,
            "cost_usd": total.usd,
            "cost_by_model": {
                model: {
                    "calls": u.calls,
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "usd": u.usd,
                }
                for model, u in pred.cost_by_model.items()
            },
        },
    }


async def sse(reply: dict[str, Any], include_usage: bool):
    """The decided reply as chat.completion.chunk events: the role, the content, the finish (with the `cope`
    object), the usage if asked for, then `[DONE]`. The cascade has decided before the first byte."""
    base = {
        "id": reply["id"],
        "object": "chat.completion.chunk",
        "created": reply["created"],
        "model": reply["model"],
    }
    message = reply["choices"][0]["message"]

    def event(choices: list, **extra) -> str:
        return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    yield event([{"index": 0, "delta": {"content": message["content"]}, "finish_reason": None}])
    yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}], cope=reply["cope"])
    if include_usage:
        yield event([], usage=reply["usage"])
    yield "data: [DONE]\n\n"


def describe(cascade: Cascade) -> dict[str, Any]:
    """What a client may want to know about the served cascade: its models, task, thresholds and budget."""

    def model(role: str) -> str | None:
        lm = getattr(cascade, role).lm or dspy.settings.lm
        return getattr(lm, "model", None)

    budget = cascade.budget
    return {
        "small": model("small_executor"),
        "large": model("large_executor"),
        "task": cascade.task.name,
        "n": cascade.n,
        "tau1": cascade.tau1,
        "tau2": cascade.tau2,
        "stages": list(cascade.stages),
        "budget": None
        if budget is None
        else {"usd": budget.usd, "tokens": budget.tokens, "on_exceed": budget.on_exceed},
    }


def _usd(usd: float) -> str:
    return f"{usd:.12f}"


# ------------------------------------------------------------------------------------- running it


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to any interface


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without a key: anyone who reached the port could spend the budget."""
    if api_key is None and not is_loopback(host):
        raise CopeInputError(
            f"refusing to serve on {host!r} without an API key: anyone who can reach it could spend your paid "
            "model's budget. Set a token (export COPE_API_KEY=...; cope serve ... --api-key-env COPE_API_KEY) "
            "or bind 127.0.0.1."
        )


def serve(
    cascade: Cascade,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str = "cope",
    api_key: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve `cascade` with uvicorn until Ctrl-C (or SIGTERM). Non-loopback hosts need `api_key`."""
    import uvicorn

    check_bind(host, api_key)
    app = create_app(cascade, model_name=model_name, api_key=api_key)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
