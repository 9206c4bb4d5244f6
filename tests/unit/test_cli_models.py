"""`cope ask` refuses a model name it cannot open at argument time, without LiteLLM's banners."""

import pytest

from cope_dspy.cli import main
from cope_dspy.errors import CopeInputError
from cope_dspy.pair import check_model_name


@pytest.mark.parametrize("flag, name", [("--small", "nope"), ("--large", "foo/bar")])
def test_an_unknown_model_is_refused_at_argument_time(flag, name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["ask", flag, name, "What is 1 + 1?"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2
    assert f"argument {flag}: unknown model {name!r}" in err and "ollama_chat/<name>" in err
    assert "Provider List" not in out + err and "Give Feedback" not in out + err


@pytest.mark.parametrize(
    "name",
    [
        "qwen2.5-coder-0.5b",
        "ollama_chat/qwen2.5:1.5b",
        "openai/my-server-model",
        "anthropic/claude-haiku-4-5",
    ],
)
def test_names_it_can_open_pass(name):
    assert check_model_name(name) == name


def test_the_check_is_a_cope_input_error_in_the_library():
    with pytest.raises(CopeInputError, match="provider prefix"):
        check_model_name("gpt4-typo-without-provider")


def test_cope_eval_without_the_harness_says_how_to_get_it(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "evals", None)  # as if only the library were installed
    monkeypatch.setitem(sys.modules, "evals.run", None)
    assert main(["eval", "gsm8k", "--limit", "1"]) == 2
    assert "pip install -e ." in capsys.readouterr().err

