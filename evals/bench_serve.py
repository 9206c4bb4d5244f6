"""`python -m evals.bench_serve`: the latency `cope serve --cascade` adds to a request, over calling the cascade.

One cascade of two instant scripted models (no model time at all, so what remains is overhead) is called
three ways, request by request, in turn: directly (`await cascade.acall(...)`); through the server's ASGI app
in this process (httpx's ASGI transport: the app's own work, no socket); and over HTTP through the server
(uvicorn, as `cope serve` runs it) in a child process on 127.0.0.1, with one kept-alive connection. The
latency a way adds to request i is its time minus the direct time of the request just before it; p50 and
p90 over all requests are printed. Questions cycle through the three exits (stage 1, 2, 3), each question
is new (no cache can answer it), and every call reports 100 + 20 tokens.

    python -m evals.bench_serve --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import time

import dspy
import httpx

from cope_dspy import Cascade, Math, Prices

LEVELS = ("easy", "medium", "hard")


def instant_lm(name: str, right: bool) -> dspy.LM:
    """A dspy.LM that answers at once in DSPy's chat format: goals, guidelines, and sums that are right
    (large model) or right only when the question is easy or a guideline is given (small model)."""
    from dspy.lm15 import Message, Response, TextPart, Usage

    class Engine:
        def complete(self, request):
            system = (
                request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            )
            user = "\n".join(m.text or "" for m in request.messages if m.role == "user")
            if "`goal`" in system:
                text = "[[ ## goal ## ]]\nAdd the two numbers."
            elif "`guideline`" in system:
                text = "[[ ## guideline ## ]]\nAdd the units, then the tens."
            else:
                a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", user).groups())
                agree = right or "(easy)" in user or ("(medium)" in user and "Guideline:" in user)
                answer = a + b if agree else a + b + 1 + len(user) % 97  # small disagreements on hard ones
                text = (
                    f"[[ ## solution ## ]]\n{a} + {b} = \\boxed{{{answer}}}\n\n[[ ## answer ## ]]\n{answer}"
                )
            return Response(
                id=None,
                model=name,
                message=Message.assistant([TextPart(text + "\n\n[[ ## completed ## ]]")]),
                finish_reason="stop",
                usage=Usage(input_tokens=100, output_tokens=20, total_tokens=120),
            )

    class AsyncEngine:
        async def complete(self, request):
            return Engine().complete(request)

    return dspy.LM(name, engine=Engine(), async_engine=AsyncEngine(), cache=False)


def instant_cascade(n: int) -> Cascade:
    small, large = instant_lm("bench/small", right=False), instant_lm("bench/large", right=True)
    prices = Prices({"bench/small": (0.0, 0.0), "bench/large": (0.15, 0.60)})
    return Cascade(small=small, large=large, task=Math(), n=n, prices=prices)


def question(i: int, way: int) -> str:
    """Request i's question for one way of calling: the same exit (stage) for every way, new numbers each."""
    return f"What is {3 * i + way} + {i + 7}? ({LEVELS[i % 3]})"


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def measure(url: str, requests: int, warmup: int, n: int) -> dict[str, list[float]]:
    """Seconds per request: wall-clock for each way, and this process's CPU time for the two in-process ways
    (CPU time is not stretched by other processes, so it shows the app's own work on a busy machine)."""
    from cope_dspy.server import create_app

    cascade = instant_cascade(n)
    times: dict[str, list[float]] = {
        "direct": [],
        "asgi": [],
        "http": [],
        "models": [],
        "direct cpu": [],
        "asgi cpu": [],
    }
    asgi = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(instant_cascade(n))), base_url="http://asgi"
    )
    async with asgi, httpx.AsyncClient(base_url=url, timeout=60) as http:
        for i in range(warmup + requests):
            elapsed = {}
            for way, client in enumerate((None, asgi, http)):
                name = ("direct", "asgi", "http")[way]
                wall, cpu = time.perf_counter(), time.process_time()
                if client is None:
                    await cascade.acall(question=question(i, way))
                else:
                    body = {"model": "cope", "messages": [{"role": "user", "content": question(i, way)}]}
                    (await client.post("/v1/chat/completions", json=body)).raise_for_status()
                elapsed[name] = time.perf_counter() - wall
                elapsed[f"{name} cpu"] = time.process_time() - cpu
            wall = time.perf_counter()
            (await http.get("/v1/models")).raise_for_status()
            elapsed["models"] = time.perf_counter() - wall
            if i >= warmup:
                for name in times:
                    times[name].append(elapsed[name])
    return times


def serve_child(port: int, n: int) -> None:
    import uvicorn

    from cope_dspy.server import create_app

    uvicorn.run(
        create_app(instant_cascade(n)), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, child: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the server exited with code {child.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer /health within {timeout_s:.0f} s")


def report(times: dict[str, list[float]]) -> str:
    def row(name: str, values: list[float]) -> str:
        p50, p90, mean = (
            1000 * v for v in (percentile(values, 0.5), percentile(values, 0.9), statistics.fmean(values))
        )
        return f"{name:<48} p50 {p50:7.2f} ms   p90 {p90:7.2f} ms   mean {mean:7.2f} ms"

    def added(way: str, base: str) -> list[float]:
        return [t - d for d, t in zip(times[base], times[way], strict=True)]

    return "\n".join(
        [
            "wall-clock per request",
            row("  cascade.acall, direct", times["direct"]),
            row("  the server's app in-process (ASGI, no socket)", times["asgi"]),
            row("    added by the server", added("asgi", "direct")),
            row("  the server over HTTP (uvicorn on 127.0.0.1)", times["http"]),
            row("    added by the server and HTTP", added("http", "direct")),
            row("  GET /v1/models over HTTP (no cascade run)", times["models"]),
            "CPU time of this process per request (not stretched by other processes)",
            row("  cascade.acall, direct", times["direct cpu"]),
            row("  the server's app in-process (ASGI, no socket)", times["asgi cpu"]),
            row("    added by the server", added("asgi cpu", "direct cpu")),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.bench_serve", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=500, help="measured requests each way")
    p.add_argument("--warmup", type=int, default=30, help="requests each way before measuring")
    p.add_argument("--n", type=int, default=8, help="samples per stage of the cascade")
    p.add_argument("--serve-port", type=int, default=None, help=argparse.SUPPRESS)  # the child's role
    args = p.parse_args(argv)
    if args.serve_port is not None:
        serve_child(args.serve_port, args.n)
        return 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = subprocess.Popen(
        [sys.executable, "-m", "evals.bench_serve", "--serve-port", str(port), "--n", str(args.n)]
    )
    try:
        wait_until_up(url, child)
        load_before = os.getloadavg()
        times = asyncio.run(measure(url, args.requests, args.warmup, args.n))
        load_after = os.getloadavg()
    finally:
        child.terminate()
        child.wait(timeout=30)
    print(
        f"{args.requests} requests each way (after {args.warmup} warm-up), one at a time, in turn; cascade n={args.n}, "
        "instant scripted models, exits cycling through stages 1, 2, 3"
    )
    print(report(times))
    print(
        f"machine: {os.cpu_count()} cores; 1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
        "after (other work shared the machine when above ~0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
