"""`pip install ARGS` done by uv, with pip's configuration (used by scripts/setup.sh).

    python scripts/uv_pip.py UV PYTHON ARGS...

runs `UV pip install --python PYTHON <pip's configuration as uv options> ARGS`. uv reads none of pip's
configuration (pip.conf, PIP_* variables), so this reads it with `PYTHON -m pip config list` (files and
PIP_* variables, merged as pip merges them for `pip install`: global, then install, then environment) and
passes each setting that changes what is installed as uv's option for it: index-url, extra-index-url,
find-links, constraint, no-index, pre, only-binary, no-binary, no-build-isolation, trusted-host; cert,
client-cert, proxy and timeout as the variables uv reads for them. Indexes are searched as pip searches them,
all together for the best version (uv's `--index-strategy unsafe-best-match`); uv's own configuration files
are not read (`--no-config`), so pip's configuration is the one that counts.

A pip setting this does not know how to pass on (require-hashes, prefer-binary, user, ...) is not dropped
silently: it exits 3 before running uv, and set-up installs with pip instead. Settings that only change pip's
output or its cache are ignored.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

# Settings that change only pip's own output, prompts, logs or cache: nothing to pass on.
IGNORED = {
    "disable-pip-version-check", "no-input", "progress-bar", "quiet", "verbose", "no-color", "cache-dir",
    "no-cache-dir", "log", "log-file", "no-warn-script-location", "no-warn-conflicts", "root-user-action",
    "exists-action", "break-system-packages", "retries", "no-python-version-warning", "isolated",
}
LISTS = {  # pip setting -> uv option, once per whitespace-separated value
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
    "only-binary": "--only-binary",
    "no-binary": "--no-binary",
}
FLAGS = {"no-index": ["--no-index"], "pre": ["--prerelease", "allow"], "no-build-isolation": ["--no-build-isolation"]}
ENVIRONMENT = {  # pip setting -> variables uv reads for it
    "cert": ["SSL_CERT_FILE"],
    "client-cert": ["SSL_CLIENT_CERT"],
    "proxy": ["HTTPS_PROXY", "HTTP_PROXY"],
    "timeout": ["UV_HTTP_TIMEOUT"],
    "default-timeout": ["UV_HTTP_TIMEOUT"],
}
# pip applies the sections in this order, a later one overriding an earlier one (":env:" = PIP_* variables).
SECTIONS = ("global", "install", ":env:")
TRUE, FALSE = {"1", "true", "yes", "y", "on"}, {"0", "false", "no", "n", "off", ""}


class Unsupported(Exception):
    """A pip setting uv cannot be given: install with pip."""


def effective(config_list: str) -> dict[str, str]:
    """pip's settings for `pip install`, from `pip config list` output (`section.key='value'` lines)."""
    by_section: dict[str, dict[str, str]] = {section: {} for section in SECTIONS}
    for line in config_list.splitlines():
        match = re.fullmatch(r"(?P<section>[^.=]*)\.(?P<key>[^=]+)=(?P<value>.*)", line.strip())
        if not match:
            continue
        section, key = match["section"], match["key"].replace("_", "-").lstrip("-")
        if section in by_section:  # other sections configure other pip commands (download, wheel, ...)
            by_section[section][key] = ast.literal_eval(match["value"])
    settings: dict[str, str] = {}
    for section in SECTIONS:
        settings.update(by_section[section])
    return settings


def flag(key: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE or word.isdigit() and int(word) > 0:
        return True
    if word in FALSE:
        return False
    raise Unsupported(f"pip setting {key}={value!r}: not a yes or no")


def uv_options(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(uv pip install options, environment variables) that carry pip's settings; Unsupported otherwise."""
    args = ["--index-strategy", "unsafe-best-match", "--no-config"]
    env: dict[str, str] = {}
    for key, value in sorted(settings.items()):
        if key in IGNORED:
            continue
        if key == "index-url":
            args += ["--index-url", value.strip()]
        elif key in LISTS:
            for item in value.split():
                args += [LISTS[key], item]
        elif key in FLAGS:
            if flag(key, value):
                args += FLAGS[key]
        elif key in ENVIRONMENT:
            for name in ENVIRONMENT[key]:
                env[name] = value.strip()
        else:
            raise Unsupported(f"pip setting {key}={value!r} has no uv equivalent here")
    return args, env


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    uv, python, *install = argv
    listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True)
    if listed.returncode != 0:
        print(f"uv: cannot read pip's configuration ({listed.stderr.strip()}); using pip", file=sys.stderr)
        return 3
    try:
        args, env = uv_options(effective(listed.stdout))
    except Unsupported as why:
        print(f"uv: {why}; using pip", file=sys.stderr)
        return 3
    command = [uv, "pip", "install", "--python", python, *args, *install]
    return subprocess.run(command, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
