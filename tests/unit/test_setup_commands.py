"""The README's set-up and test commands are what CI runs, and they pick the project's environment themselves.

- `.ci/run` executes exactly the two commands of the README's "Set up and test" block, in order, and nothing else.
- `scripts/venv.sh` (used by `scripts/setup.sh`) uses an active virtual environment as is, else makes `.venv`
  with the first Python >= 3.11 it finds; fake interpreters stand in for real ones, so no environment is built.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Lines of .ci/run that only steer the shell; every other line runs a command CI is made of.
SHELL_WORDS = {"set", "cd", "export", "if", "then", "else", "elif", "fi", "echo", "exit", "fi;"}


def readme_commands() -> list[str]:
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Set up and test", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def ci_commands() -> list[str]:
    commands = []
    for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0] in SHELL_WORDS or re.match(r"\w+=", words[0]) or words[0].startswith("#!"):
            continue
        cut = next((i for i, w in enumerate(words) if w in {"||", "&&", "|", ";"}), len(words))
        commands.append(shlex.join(words[:cut]))
    return commands


def test_ci_runs_exactly_the_readme_commands():
    assert len(readme_commands()) == 2
    assert ci_commands() == readme_commands()


def test_the_readme_commands_do_not_depend_on_which_python_is_on_path():
    """`python -m pytest` would run whatever `python` the shell finds, not the environment set-up made."""
    for command in readme_commands():
        assert shlex.split(command)[0] not in {"python", "python3", "pip", "pytest"}, command


# -- scripts/venv.sh, with fake interpreters --------------------------------------------------------------

FAKE_PYTHON = """#!/bin/sh
# A stand-in interpreter: reports version {version}; `-m venv DIR` makes DIR/bin/python, or fails.
case "$1" in
  -c) [ "{usable}" = yes ] ;;
  -V) echo "Python {version}" ;;
  -m) if [ "$2" = pip ]; then echo "pip 23.0.1"
      elif [ "{venv_ok}" = yes ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
      else mkdir -p "$3"; echo "ensurepip is not available" >&2; exit 1; fi ;;
esac
"""


def fake_python(path: Path, version: str = "3.12.1", *, venv_ok: bool = True) -> Path:
    usable = "yes" if tuple(map(int, version.split(".")[:2])) >= (3, 11) else "no"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_PYTHON.format(version=version, usable=usable, venv_ok="yes" if venv_ok else "no"))
    path.chmod(0o755)
    return path


@pytest.fixture
def project(tmp_path):
    """A project holding a copy of scripts/venv.sh (which works on the project it lies in), and a bin/ that
    holds only the tools the script needs, so PATH shows it no interpreter but the fakes a test adds."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "venv.sh", tmp_path / "scripts" / "venv.sh")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname", "rm", "mkdir", "cp"):
        (tools / tool).symlink_to(shutil.which(tool))
    return tmp_path


def venv_sh(project: Path, **env: str) -> subprocess.CompletedProcess:
    env = {"PATH": str(project / "bin"), "HOME": str(project), **env}
    return subprocess.run(
        [shutil.which("bash"), str(project / "scripts" / "venv.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_active_virtual_environment_is_used_as_is(project, tmp_path):
    active = tmp_path / "elsewhere"
    fake_python(active / "bin" / "python", "3.11.2")
    out = venv_sh(project, VIRTUAL_ENV=str(active))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(active / "bin" / "python")
    assert "the active virtual environment" in out.stderr and "3.11.2" in out.stderr
    assert not (project / ".venv").exists()


def test_an_active_environment_with_an_old_python_is_refused(project, tmp_path):
    fake_python(tmp_path / "old" / "bin" / "python", "3.10.12")
    out = venv_sh(project, VIRTUAL_ENV=str(tmp_path / "old"))
    assert out.returncode != 0 and "no Python >= 3.11" in out.stderr and "deactivate" in out.stderr


def test_makes_venv_with_the_first_python_new_enough(project):
    fake_python(project / "bin" / "python3", "3.9.2")  # found first, too old: skipped
    fake_python(project / "bin" / "python", "3.12.1")
    out = venv_sh(project)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(project / ".venv" / "bin" / "python")
    assert f"creating {project / '.venv'} with {project / 'bin' / 'python'} (Python 3.12.1)" in out.stderr
    # run again: the environment is reused, not made anew
    again = venv_sh(project)
    assert again.returncode == 0 and again.stdout == out.stdout and "reusing" in again.stderr


def test_when_uv_cannot_make_the_environment_venv_and_ensurepip_do(project, tmp_path):
    """$COPE_UV (setup.sh's uv, when installed before) only speeds up making .venv; any failure of it, here a
    uv that fails and an interpreter without ensurepip's wheels, leaves the usual `python -m venv`."""
    fake_python(project / "bin" / "python3", "3.11.2")
    uv = tmp_path / "uv"
    uv.write_text("#!/bin/sh\nexit 1\n")
    uv.chmod(0o755)
    out = venv_sh(project, COPE_UV=str(uv))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(project / ".venv" / "bin" / "python")
    assert (project / ".venv" / "bin" / "python").is_file()

def test_python_variable_is_the_only_candidate(project):
    fake_python(project / "bin" / "python3", "3.12.1")
    old = fake_python(project / "pythons" / "python3.10", "3.10.0")
    out = venv_sh(project, PYTHON=str(old))
    assert out.returncode != 0 and not (project / ".venv").exists()
    assert f"no Python >= 3.11 found (tried: {old})" in out.stderr and "PYTHON=" in out.stderr


def test_no_python_at_all_says_how_to_get_one(project):
    out = venv_sh(project)
    assert out.returncode != 0
    assert (
        "tried: python3 python python3.13 python3.12 python3.11" in out.stderr
        and "python3-venv" in out.stderr
    )


def test_a_failed_venv_is_removed_and_the_fix_named(project):
    fake_python(project / "bin" / "python3", "3.11.2", venv_ok=False)  # Debian without python3-venv
    out = venv_sh(project)
    assert out.returncode != 0 and "apt-get install python3-venv" in out.stderr
    assert not (project / ".venv").exists()


def test_a_broken_venv_is_reported_and_left_alone(project):
    (project / ".venv").mkdir()
    (project / ".venv" / "keep").write_text("the user's")
    fake_python(project / "bin" / "python3")
    out = venv_sh(project)
    assert out.returncode != 0 and "rm -rf .venv" in out.stderr
    assert (project / ".venv" / "keep").read_text() == "the user's"


# -- scripts/uv_pip.py: pip's configuration passed on to uv ----------------------------------------------


def uv_pip():
    import importlib.util

    spec = importlib.util.spec_from_file_location("uv_pip", REPO / "scripts" / "uv_pip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


THIS_MACHINE = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.disable-pip-version-check='1'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
"""


def test_pip_configuration_becomes_uv_options():
    mod = uv_pip()
    args, env = mod.uv_options(mod.effective(THIS_MACHINE))
    assert args == [
        "--index-strategy", "unsafe-best-match", "--no-config",  # pip searches all indexes for the best version
        "--constraint", "/etc/xdg/pip/constraints.txt",
        "--extra-index-url", "file:///opt/pypi/simple",
        "--extra-index-url", "file:///opt/pypi-more/simple",
        "--find-links", "/opt/wheels",
    ]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "UV_HTTP_TIMEOUT": "180"}


def test_pip_precedence_global_then_install_then_environment():
    mod = uv_pip()
    settings = mod.effective(
        "global.index-url='https://a/simple'\ninstall.index-url='https://b/simple'\n"
        "download.index-url='https://other-command/simple'\n:env:.no-index='yes'\nglobal.no-index='no'\n"
        "global.no_build_isolation='true'\n"
    )
    args, _ = mod.uv_options(settings)
    assert args[args.index("--index-url") + 1] == "https://b/simple" and "--no-index" in args
    assert "--no-build-isolation" in args and "https://other-command/simple" not in args
    assert "--no-index" not in mod.uv_options(mod.effective(":env:.no-index='0'"))[0]


@pytest.mark.parametrize("setting", ["global.require-hashes='1'", "install.prefer-binary='yes'", "global.user='1'"])
def test_a_pip_setting_uv_cannot_take_means_pip(setting, tmp_path):
    mod = uv_pip()
    with pytest.raises(mod.Unsupported):
        mod.uv_options(mod.effective(setting))
    # end to end: exit 3 (set-up then installs with pip), uv never started
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho \"{setting}\"\n")
    python.chmod(0o755)
    ran = tmp_path / "uv-ran"
    uv = tmp_path / "uv"
    uv.write_text(f"#!/bin/sh\ntouch {ran}\n")
    uv.chmod(0o755)
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "uv_pip.py"), str(uv), str(python), "-e", "."],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 3 and "using pip" in out.stderr and not ran.exists()


def test_uv_is_called_with_the_configuration(tmp_path):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho \"global.find-links='/w'\"; echo \"global.cert='/c.pem'\"\n")
    python.chmod(0o755)
    uv = tmp_path / "uv"
    uv.write_text(f"#!/bin/sh\necho \"$SSL_CERT_FILE $*\" > {tmp_path / 'called'}\n")
    uv.chmod(0o755)
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "uv_pip.py"), str(uv), str(python), "--no-deps", "x.whl"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "called").read_text().split() == [
        "/c.pem", "pip", "install", "--python", str(python),
        "--index-strategy", "unsafe-best-match", "--no-config", "--find-links", "/w", "--no-deps", "x.whl",
    ]
