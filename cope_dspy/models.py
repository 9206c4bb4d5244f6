"""LM factories: `ollama(...)` and `local_lm(...)` for small local models, `api(...)` for large paid ones.

Nothing here creates a client, reads a key or touches the network at import time; `preflight` is the only
function that talks to a server before the first LM call.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

import dspy

from cope_dspy.errors import CopeInputError, MissingAPIKey, ModelUnavailable

DEFAULT_OLLAMA_HOST = "http://localhost:11434"
OLLAMA_PORT = 11434

# Provider prefix -> the environment variables that hold its key (any one is enough), as DSPy's
# native engine and LiteLLM read them. Other providers are checked with `litellm.validate_environment`.
API_KEY_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "groq": ("GROQ_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"),
    "fireworks_ai": ("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY"),
    "cohere": ("COHERE_API_KEY",),
}
# Prefixes that are local servers: no key to check.
KEYLESS_PROVIDERS = {"ollama", "ollama_chat", "hosted_vllm", "lm_studio", "llamafile", "vllm", "sglang"}
# How long a local model's LM waits for its reply (seconds) unless given `timeout=`: a non-streamed reply
# of 1,024 tokens from a 1.5B model on a busy laptop CPU can take over ten minutes, past the 600 s DSPy's
# engines wait for a paid API, which turned such replies into transport errors (an abstaining sample).
LOCAL_TIMEOUT_S = 3600.0


# -- Ollama ----------------------------------------------------------------------------------------------


def ollama_host(host: str | None = None) -> str:
    """The Ollama server's base URL, normalised: `http://host:port`, no trailing slash, no `/v1`.

    Reads `host`, else `$OLLAMA_HOST`, else http://localhost:11434. Accepts "host", "host:port", ":port",
    "http(s)://host[:port]", with or without a trailing "/" or "/v1" (the OpenAI-compatible path) or "/api".
    A bare host without a scheme gets Ollama's port 11434; "0.0.0.0" (listen on all interfaces, a server
    setting) is reached as 127.0.0.1.
    """
    raw = (host if host is not None else os.environ.get("OLLAMA_HOST", "")).strip()
    if not raw:
        return DEFAULT_OLLAMA_HOST
    explicit_scheme = "://" in raw
    parts = urlsplit(raw if explicit_scheme else f"http://{raw}")
    if parts.scheme not in ("http", "https"):
        raise CopeInputError(
            f"Ollama host {raw!r} must be http:// or https:// (e.g. http://localhost:11434)."
        )
    hostname = parts.hostname or "127.0.0.1"
    if hostname == "0.0.0.0":
        hostname = "127.0.0.1"
    if ":" in hostname:  # IPv6 literal
        hostname = f"[{hostname}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise CopeInputError(f"Ollama host {raw!r} has an invalid port.") from exc
    if port is None and not explicit_scheme:
        port = OLLAMA_PORT
    path = parts.path.rstrip("/")
    for suffix in ("/v1", "/api"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    netloc = f"{hostname}:{port}" if port else hostname
    return f"{parts.scheme}://{netloc}{path}"


def _ollama_name(model: str) -> str:
    for prefix in ("ollama_chat/", "ollama/"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def ollama(
    model: str,
    host: str | None = None,
    num_ctx: int = 8192,
    keep_alive: str | int | None = None,
    **kwargs: Any,
) -> dspy.LM:
    """A `dspy.LM` for a model served by Ollama, with a context window that is really `num_ctx` tokens.

        small = ollama("qwen2.5:1.5b", temperature=0.7, max_tokens=512)

    Routing (checked on dspy 3.4.1 / litellm 1.110.2 against a recording server): the LM posts to Ollama's
    native `POST <host>/api/chat` through DSPy's LiteLLM engine (`engine="litellm"`, `api_base=<host>`).
    That is the one endpoint where the context window can be set per request: the body carries
    `"options": {"num_ctx": ..., "num_predict": <max_tokens>, "temperature": ..., "seed": ...}`,
    `"keep_alive"` at top level and `"stream": false`. Ollama's OpenAI-compatible `/v1/chat/completions`
    has no way to set the context size (Ollama's docs: create a Modelfile or start the server with
    `OLLAMA_CONTEXT_LENGTH=8192 ollama serve`), and Ollama silently truncates prompts longer than its
    default window (2048 tokens in older releases, 4096 in newer ones). DSPy's default engine would post
    `ollama_chat/<m>` to `/v1/chat/completions`, and any `num_ctx`/`keep_alive` argument silently moves it
    to LiteLLM with the same `api_base` (`/v1/api/chat` -> 404): so this factory pins the engine instead.

    Per call: `temperature`, `max_tokens`, `seed` and `rollout_id` (DSPy's cache-buster; not sent) work.
    Not available through this route: `n>1` (LiteLLM refuses it for Ollama: draw samples as separate
    calls, each with its own `rollout_id`) and `logprobs` (LiteLLM refuses them for `ollama_chat`; Ollama's
    OpenAI-compatibility docs list them as unsupported on `/v1`; recent Ollama returns them on native
    `/api/chat`, e.g. `ollama.Client().chat(..., logprobs=True, top_logprobs=k)`). For logprobs use the embedded
    llama.cpp server (`cope_dspy.local.LocalServer`), whose `/v1` endpoint returns them.

    host: see `ollama_host` ($OLLAMA_HOST is honoured). num_ctx: tokens of context Ollama allocates (prompt
    and reply together); check it fits the model with `preflight(model, num_ctx=...)`. keep_alive: how long
    Ollama keeps the model loaded after a call ("10m", "1h", -1 for ever). Other keyword arguments go to
    `dspy.LM` (temperature, max_tokens, cache, num_retries, ...); `timeout` defaults to `LOCAL_TIMEOUT_S`
    (an hour: a long reply on a CPU outlasts DSPy's 600 s). Costs: DSPy reports 0 or None for Ollama;
    cope-dspy's `Prices` treat local models as free.
    """
    if not isinstance(num_ctx, int) or num_ctx < 256:
        raise CopeInputError(f"num_ctx must be an integer >= 256 (tokens of context), got {num_ctx!r}.")
    if "engine" in kwargs or "api_base" in kwargs:
        raise CopeInputError("ollama() sets engine and api_base itself; pass host=... instead.")
    options: dict[str, Any] = {"num_ctx": num_ctx}
    if keep_alive is not None:
        options["keep_alive"] = keep_alive
    kwargs.setdefault("timeout", LOCAL_TIMEOUT_S)
    return dspy.LM(
        f"ollama_chat/{_ollama_name(model)}",
        engine="litellm",
        api_base=ollama_host(host),
        **options,
        **kwargs,
    )


def _context_length(model_info: dict[str, Any] | None) -> int | None:
    info = model_info or {}
    arch = info.get("general.architecture")
    if arch and isinstance(info.get(f"{arch}.context_length"), int):
        return info[f"{arch}.context_length"]
    for key, value in info.items():
        if key.endswith(".context_length") and isinstance(value, int):
            return value
    return None


def _full_name(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _ask_yes(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _pull(client: Any, name: str, progress: bool) -> None:
    """Stream `client.pull`, showing one tqdm bar per layer from its `completed`/`total` events."""
    from tqdm.auto import tqdm

    bar, digest, status = None, None, None
    try:
        for event in client.pull(name, stream=True):
            status = event.status
            if event.digest and event.total:
                if event.digest != digest:
                    if bar is not None:
                        bar.close()
                    digest = event.digest
                    bar = tqdm(
                        total=event.total,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=f"pulling {digest.removeprefix('sha256:')[:12]}",
                        disable=not progress,
                    )
                if event.completed is not None and bar is not None:
                    bar.update(event.completed - bar.n)
            elif progress and status and not status.startswith("pulling "):
                print(status, file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    if status != "success":
        raise ModelUnavailable(
            f"Pulling '{name}' did not finish (last status: {status!r}); try `ollama pull {name}`."
        )


def preflight(
    model: str,
    host: str | None = None,
    pull: bool | str = "ask",
    num_ctx: int | None = None,
    progress: bool = True,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Check once, before a run, that Ollama is up and `model` is pulled; return what Ollama says about it.

        info = preflight("qwen2.5:1.5b", num_ctx=8192, pull=True)   # pulls with a progress bar if needed
        info["context_length"]                                       # 32768

    pull: True pulls a missing model (progress bar from the pull events); "ask" asks y/N on a terminal and
    otherwise raises; False raises. Raises ModelUnavailable (server unreachable, model missing, pull failed)
    and CopeInputError (num_ctx larger than the model's context length).
    Returns {"model", "host", "version", "context_length", "family", "parameter_size",
    "quantization_level", "capabilities", "pulled"}.
    """
    import ollama as ollama_client

    base = ollama_host(host)
    name = _ollama_name(model)
    with ollama_client.Client(host=base, timeout=timeout) as client:
        return _preflight(client, base, name, pull, num_ctx, progress, timeout)


def _preflight(
    client: Any, base: str, name: str, pull: bool | str, num_ctx: int | None, progress: bool, timeout: float
) -> dict[str, Any]:
    import httpx
    import ollama as ollama_client

    down = (
        f"Ollama is not running at {base}; start it with `ollama serve` "
        f"(or set OLLAMA_HOST to the address where it runs)."
    )
    try:
        listing = client.list()
    except httpx.TimeoutException as exc:  # up but not answering: starting it again is not the fix
        raise ModelUnavailable(
            f"Ollama at {base} did not answer within {timeout} s (it may be busy loading a model); "
            f"check it with `ollama ps`, or wait longer with preflight(..., timeout=...)."
        ) from exc
    except (ConnectionError, httpx.TransportError) as exc:
        raise ModelUnavailable(down) from exc
    except ollama_client.ResponseError as exc:
        raise ModelUnavailable(
            f"The server at {base} is not Ollama: GET /api/tags answered "
            f"{exc.status_code} ({exc.error}). For an OpenAI-compatible server use "
            f"cope_dspy.models.local_lm(base_url, model_name)."
        ) from exc

    present = {m.model for m in listing.models if m.model}
    pulled = False
    if _full_name(name) not in {_full_name(p) for p in present}:
        fix = f"run `ollama pull {name}` (or call preflight(..., pull=True))"
        if pull == "ask":
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise ModelUnavailable(f"Model '{name}' is not pulled on the Ollama server at {base}; {fix}.")
            if not _ask_yes(f"Model '{name}' is not on the Ollama server at {base}. Pull it now?"):
                raise ModelUnavailable(f"Model '{name}' is not pulled on the Ollama server at {base}; {fix}.")
        elif not pull:
            raise ModelUnavailable(f"Model '{name}' is not pulled on the Ollama server at {base}; {fix}.")
        try:
            _pull(client, name, progress)
        except ollama_client.ResponseError as exc:
            raise ModelUnavailable(
                f"Ollama could not pull '{name}': {exc.error}. Check the name at https://ollama.com/library."
            ) from exc
        except (ConnectionError, httpx.TransportError) as exc:
            raise ModelUnavailable(down) from exc
        pulled = True

    try:
        shown = client.show(name)
    except ollama_client.ResponseError as exc:
        raise ModelUnavailable(f"Ollama at {base} cannot show '{name}': {exc.error}.") from exc
    context_length = _context_length(shown.modelinfo)
    if num_ctx is not None and context_length is not None and num_ctx > context_length:
        raise CopeInputError(
            f"num_ctx={num_ctx} is larger than the context length of '{name}' "
            f"({context_length} tokens); use num_ctx <= {context_length}."
        )
    try:
        version = httpx.get(f"{base}/api/version", timeout=timeout).json().get("version")
    except (httpx.HTTPError, ValueError):
        version = None
    details = shown.details
    return {
        "model": name,
        "host": base,
        "version": version,
        "context_length": context_length,
        "family": details.family if details else None,
        "parameter_size": details.parameter_size if details else None,
        "quantization_level": details.quantization_level if details else None,
        "capabilities": list(shown.capabilities or []),
        "pulled": pulled,
    }


# -- OpenAI-compatible local servers (llama.cpp, vLLM, Ollama's /v1) -------------------------------------


def local_lm(base_url: str, model_name: str, *, api_key: str = "local", **kwargs: Any) -> dspy.LM:
    """A `dspy.LM` for an OpenAI-compatible server such as llama.cpp's `llama-server`.

        lm = local_lm("http://127.0.0.1:8080/v1", "smollm2-135m", temperature=0.7, max_tokens=256)

    Posts to `<base_url>/chat/completions` (`/v1` is appended when missing) on DSPy's default engine:
    `temperature`, `max_tokens`, `seed`, `logprobs`/`top_logprobs` are forwarded; `n>1` becomes n
    requests; `rollout_id` busts DSPy's cache. The key is a placeholder that local servers ignore (an
    empty key is refused by DSPy). DSPy may price "openai/<model_name>" from its price map when the name
    happens to be an OpenAI model's; cope-dspy's `Prices` decide what a call costs, not that figure.
    `timeout` (seconds to wait for the reply) defaults to `LOCAL_TIMEOUT_S`, an hour, not DSPy's 600 s: a
    long non-streamed reply from a CPU-bound server can take longer, and the server is local.
    """
    kwargs.setdefault("timeout", LOCAL_TIMEOUT_S)
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    if not api_key:
        raise CopeInputError("api_key must be non-empty (any placeholder such as 'local' works).")
    return dspy.LM(f"openai/{model_name}", api_base=base, api_key=api_key, **kwargs)


# -- Paid APIs ---------------------------------------------------------------------------------------------


def _provider(model: str) -> str | None:
    return model.split("/", 1)[0] if "/" in model else None


def _missing_key_vars(model: str) -> list[str]:
    """The env vars the model needs and lacks ([] if fine). Known providers need no LiteLLM import."""
    provider = _provider(model)
    if provider in KEYLESS_PROVIDERS:
        return []
    if provider in API_KEY_ENV:
        names = API_KEY_ENV[provider]
        return [] if any(os.environ.get(n) for n in names) else list(names)
    import litellm  # unknown provider or a bare model name: let LiteLLM say what it reads

    try:
        report = litellm.validate_environment(model)
    except Exception:  # LiteLLM cannot tell: let the call itself fail with the provider's message
        return []
    missing = [k for k in report.get("missing_keys", []) if k.endswith("_API_KEY")]
    return missing if missing and not report.get("keys_in_environment") else []


def api(model: str, api_key_env: str | None = None, *, num_retries: int = 5, **kwargs: Any) -> dspy.LM:
    """A `dspy.LM` for a paid API model, any LiteLLM model string; fails early when its key is missing.

        large = api("openai/gpt-4o-mini")                          # reads OPENAI_API_KEY
        large = api("anthropic/claude-3-5-haiku-latest", max_tokens=1024)
        large = api("openai/gpt-4o-mini", api_key_env="WORK_OPENAI_KEY")

    api_key_env: the variable holding the key when it is not the provider's usual one (the value is read
    now and passed to the LM; it is never printed, and DSPy's saved state excludes it). Without it the
    provider's usual variable (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, ...) must be set, and is
    read by DSPy at call time. num_retries: retries with exponential backoff on transient errors
    (rate limits, 5xx, timeouts). Other keyword arguments go to `dspy.LM`.
    Raises MissingAPIKey naming the variable to set.
    """
    if "api_key" in kwargs:
        return dspy.LM(model, num_retries=num_retries, **kwargs)
    if api_key_env is not None:
        value = os.environ.get(api_key_env)
        if not value:
            raise MissingAPIKey(
                f"{api_key_env} is not set (api_key_env for {model}). Set it in your shell "
                f"(export {api_key_env}=...) or in a .env file you load before running."
            )
        return dspy.LM(model, num_retries=num_retries, api_key=value, **kwargs)
    missing = _missing_key_vars(model)
    if missing:
        names = " or ".join(missing)
        raise MissingAPIKey(
            f"No API key for {model}: set {names} (export {missing[0]}=...), or pass "
            f"api_key_env='YOUR_VAR' naming the variable that holds it. To run without a "
            f"paid API, use a local large model (see `cope serve`)."
        )
    return dspy.LM(model, num_retries=num_retries, **kwargs)
