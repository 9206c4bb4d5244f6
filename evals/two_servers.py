"""`python -m evals.two_servers`: how to split a few CPU cores between a small and a large local server.

The benchmark runs and `cope eval` start two llama.cpp servers (small and "large") on one machine. This
measures a fixed mixed load (many small-model requests, a few large-model ones, all at once, each
generating exactly `--tokens` tokens) under several thread settings and prints the wall time and the
throughput of each, so the default in `cope_dspy.pair` rests on a measurement.

    python -m evals.two_servers --small qwen2.5-coder-0.5b --large qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from cope_dspy.local import LocalServer

PROMPT = ("Write a python function to remove first and last occurrence of a given character from the string. "
          "Explain the approach, then give the code.")

CONFIGS = {
    "1+1 threads": (1, 1, ()),
    "2+2 threads, --poll 0": (2, 2, ("--poll", "0")),
    "2+1 threads, --poll 0": (2, 1, ("--poll", "0")),
}


def _ask(url: str, model: str, tokens: int, seed: int) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens,
            "temperature": 0.7, "seed": seed, "ignore_eos": True}
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return int(json.loads(resp.read())["usage"]["completion_tokens"])


def measure(small: str, large: str, threads: tuple[int, int], extra: tuple[str, ...], n_small: int, n_large: int,
            tokens: int) -> dict:
    with LocalServer(small, parallel=4, threads=threads[0], extra_args=extra) as s, \
            LocalServer(large, parallel=2, threads=threads[1], extra_args=extra) as lg:
        _ask(s.url, s.model_name, 4, 0)  # warm both up (weights paged in)
        _ask(lg.url, lg.model_name, 4, 0)
        jobs = [(s, i) for i in range(n_small)] + [(lg, i) for i in range(n_large)]
        started = time.perf_counter()
        with ThreadPoolExecutor(len(jobs)) as pool:
            done = list(pool.map(lambda job: _ask(job[0].url, job[0].model_name, tokens, job[1] + 1), jobs))
        wall = time.perf_counter() - started
    return {"wall_s": round(wall, 1), "tokens": sum(done), "tokens_per_s": round(sum(done) / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.two_servers", description=__doc__.split("\n")[0])
    p.add_argument("--small", default="qwen2.5-coder-0.5b")
    p.add_argument("--large", default="qwen2.5-coder-1.5b")
    p.add_argument("--n-small", type=int, default=8, help="small-model requests in the load")
    p.add_argument("--n-large", type=int, default=2, help="large-model requests in the load")
    p.add_argument("--tokens", type=int, default=96, help="tokens each request generates")
    args = p.parse_args(argv)
    print(f"load: {args.n_small} x {args.small} + {args.n_large} x {args.large}, {args.tokens} tokens each, at once")
    for name, (ts, tl, extra) in CONFIGS.items():
        r = measure(args.small, args.large, (ts, tl), extra, args.n_small, args.n_large, args.tokens)
        print(f"{name:24s} wall {r['wall_s']:6.1f} s   {r['tokens']} tokens   {r['tokens_per_s']:5.1f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
