"""Opening models from names (cope_dspy/pair.py): what reaches an embedded server."""

import dspy
import pytest


def test_a_repeat_penalty_goes_to_the_embedded_server_and_nowhere_else(monkeypatch):
    import contextlib

    import cope_dspy.local as local
    from cope_dspy.errors import CopeInputError
    from cope_dspy.pair import open_model, open_models

    started = []

    class Server:  # stands in for llama-server: records its flags
        def __init__(self, name, **kw):
            started.append((name, kw.get("extra_args", ())))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def lm(self, **kw):
            return dspy.LM("openai/x", api_base="http://127.0.0.1:1/v1", api_key="local", **kw)

    monkeypatch.setattr(local, "LocalServer", Server)
    with contextlib.ExitStack() as stack:
        open_model(stack, "qwen2.5-coder-0.5b", repeat_penalty=1.1)
        open_model(stack, "qwen2.5-coder-0.5b")
        open_models(stack, "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", {}, repeat_penalty=1.25)
        assert started == [("qwen2.5-coder-0.5b", ("--repeat-penalty", "1.1")), ("qwen2.5-coder-0.5b", ()),
                           ("qwen2.5-coder-0.5b", ("--repeat-penalty", "1.25")),
                           ("qwen2.5-coder-1.5b", ("--repeat-penalty", "1.25"))]
        with pytest.raises(CopeInputError, match="'ollama_chat/qwen2.5:0.5b' is not a packaged model.*Ollama applies"):
            open_model(stack, "ollama_chat/qwen2.5:0.5b", repeat_penalty=1.1)
        with pytest.raises(CopeInputError, match="finite number > 0"):
            open_model(stack, "qwen2.5-coder-0.5b", repeat_penalty=0.0)
    assert len(started) == 4  # neither refusal started a server


def test_the_command_line_passes_a_repeat_penalty_on_and_refuses_a_bad_one_before_any_server(monkeypatch, capsys):
    import cope_dspy.local as local
    from cope_dspy.cli import build_parser, main, serve_mode
    from cope_dspy.errors import CopeInputError

    monkeypatch.setattr(local, "LocalServer", lambda *a, **k: (_ for _ in ()).throw(AssertionError("started")))
    assert main(["ask", "--repeat-penalty", "0", "What is 1 + 1?"]) == 1
    assert "repeat_penalty must be a finite number > 0" in capsys.readouterr().err
    assert main(["serve", "--cascade", "--repeat-penalty", "-1"]) == 1
    assert "repeat_penalty must be a finite number > 0" in capsys.readouterr().err
    assert serve_mode(build_parser().parse_args(["serve", "--cascade", "--repeat-penalty", "1.1"])).repeat_penalty == 1.1
    with pytest.raises(CopeInputError, match="--repeat-penalty: not a flag of `cope serve` with no --cascade"):
        serve_mode(build_parser().parse_args(["serve", "--model", "smollm2-135m", "--repeat-penalty", "1.1"]))
