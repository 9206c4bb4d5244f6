"""The embedded llama.cpp server with a real model: chat, logprobs, parallel slots, clean start and stop.

The first tests start (and stop) their own server; the rest share the session's `local_server`, so only
one server runs at a time.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from cope_dspy.errors import LocalModelMissing, ModelUnavailable
from cope_dspy.local import LocalServer
from cope_dspy.models import local_lm

pytestmark = pytest.mark.integration
TEST_MODEL = "smollm2-135m"  # as in conftest.py


def gone(pid: int, seconds: float = 15) -> bool:
    """True once no process `pid` runs (a zombie left for init counts as gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


# -- own servers (before the shared one starts) -----------------------------------------------------------


def test_server_lifecycle_leaves_no_process(tmp_path):
    started = time.monotonic()
    with LocalServer(TEST_MODEL, parallel=1) as server:
        ready = time.monotonic() - started
        pid = server.pid
        assert get_json(f"{server.url}/health")["status"] == "ok"
        assert TEST_MODEL in json.dumps(get_json(f"{server.base_url}/models"))
        reply = server.lm(temperature=0, max_tokens=4, cache=False)("Hi")  # first evaluation: no crash
        assert isinstance(reply[0], str)
    assert gone(pid), f"llama-server {pid} still running"
    print(f"startup to /health 200: {ready:.2f} s")


def test_cope_serve_runs_until_interrupted():
    proc = subprocess.Popen(
        [sys.executable, "-m", "cope_dspy.cli", "serve", "--model", TEST_MODEL, "--parallel", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[2],
        # Ctrl-C's SIGINT reaches it as at a terminal, even when the suite runs as a background job
        # (which inherits SIGINT ignored, so Python would install no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        text = "".join(lines)
        assert 'local_lm("http://127.0.0.1:' in text, text
        pid = int(text.split("[pid ")[1].split(",")[0])
        base_url = text.split(" at ")[1].split()[0]
        assert get_json(f"{base_url}/models")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert gone(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_missing_model_file_errors_clearly(tmp_path):
    with pytest.raises(LocalModelMissing, match="does not exist"):
        LocalServer(tmp_path / "missing.gguf").start()


def test_a_file_that_is_not_gguf_fails_with_the_server_log(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ModelUnavailable, match="exited with code") as err:
        LocalServer(junk, parallel=1).start()
    assert "Last lines of" in str(err.value) and "junk.gguf" in str(err.value)


# -- the shared server ------------------------------------------------------------------------------------


def test_chat_completion_through_server_lm(local_server):
    lm = local_server.lm(temperature=0.0, max_tokens=8, cache=False)
    out = lm("Reply with one word: hello")
    assert isinstance(out[0], str) and out[0].strip()
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8  # max_tokens is honoured


def test_logprobs_and_seed(local_server):
    lm = local_lm(local_server.base_url, local_server.model_name, temperature=1.0, max_tokens=6, cache=False)
    out = lm("Count: 1, 2, 3,", logprobs=True, top_logprobs=2, seed=42)
    tokens = out[0]["logprobs"]["content"]
    assert tokens and all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 2 for t in tokens)
    again = lm("Count: 1, 2, 3,", logprobs=True, top_logprobs=2, seed=42)
    assert again[0]["text"] == out[0]["text"]  # same seed, same sample


def test_parallel_slots_decode_together(local_server):
    slots = local_server.slots()
    # -c is shared: each of the slots gets ctx_size // parallel tokens
    assert len(slots) == local_server.parallel and all(s["n_ctx"] == 4096 for s in slots)
    busy, done = [], threading.Event()

    def watch():
        while not done.is_set():
            busy.append(sum(bool(s.get("is_processing")) for s in local_server.slots()))
            time.sleep(0.02)

    lm = local_server.lm(temperature=1.0, max_tokens=24)

    async def samples():
        return await asyncio.gather(
            *[
                lm.acall(f"Write a sentence about the number {i}.", rollout_id=i)
                for i in range(local_server.parallel)
            ]
        )

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outs = asyncio.run(samples())
    finally:
        done.set()
        watcher.join()
    assert len(outs) == local_server.parallel and all(o[0].strip() for o in outs)
    assert max(busy) >= 2, f"slots never decoded together: {busy}"
