"""Bad input at every public entry point: a clear error naming the argument, before any paid call.

Entry points: Cascade(...) arguments, cascade(...) / acall / record call fields, the `cope` CLI's flags,
price files (Prices.from_file) and price tables, budgets (Budget), calibration settings (record, replay,
calibrate, constraints, the calibrate CLI). The scripted large model must see 0 calls in every case.
"""

from __future__ import annotations

import asyncio
import math
import subprocess

import dspy
import pytest
from fakes import math_model
from reliability_kit import BAD_INPUTS

from cope_dspy import Budget, Cascade, CopeInputError, Math, Prices, Temperatures
from cope_dspy import cli as cope_cli
from cope_dspy.calibrate import calibrate, max_usd_per_1k, record, replay, within_points_of_large
from cope_dspy.calibrate import main as calibrate_main

pytestmark = pytest.mark.filterwarnings("ignore::cope_dspy.costs.UnknownPriceWarning")  # scripted models
Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
TRIED = BAD_INPUTS  # every bad input this module tries: counted in the suite's summary


@pytest.fixture
def models():
    small = math_model("scripted/small", lambda call: "7")
    large = math_model("scripted/large", lambda call: "7")
    yield small, large
    assert large.calls == [], "a bad input reached the paid model"


def _raises(call, *names: str) -> str:
    with pytest.raises(CopeInputError) as err:
        call()
    message = str(err.value)
    for name in names:
        assert name in message, f"{name!r} not named in: {message}"
    return message


# -- Cascade(...) -------------------------------------------------------------------------------------------

BAD_CASCADE_ARGS = [
    ({"n": 0}, "n must be"), ({"n": -1}, "n must be"), ({"n": 2.5}, "n must be"), ({"n": "8"}, "n must be"),
    ({"n": True}, "n must be"), ({"tau1": 1.5}, "tau1"), ({"tau1": math.nan}, "tau1"), ({"tau1": "high"}, "tau1"),
    ({"tau2": -0.1}, "tau2"), ({"tau2": None}, "tau2"), ({"stages": ()}, "stages"), ({"stages": (4,)}, "stages"),
    ({"stages": (1, 1)}, "stages"), ({"stages": 3}, "stages"), ({"stages": "123"}, "stages"),
    ({"small": "qwen2.5:1.5b"}, "small must be a dspy.LM"), ({"large": 42}, "large must be a dspy.LM"),
    ({"task": "math"}, "task must be"), ({"task": Math}, "task must be"),
    ({"max_concurrency": 0}, "max_concurrency"), ({"max_concurrency": 2.5}, "max_concurrency"),
    ({"max_concurrency": True}, "max_concurrency"), ({"budget": 5.0}, "budget must be a cope_dspy.Budget"),
    ({"budget": {"usd": 1}}, "budget must be"), ({"prices": "cheap"}, "prices must be a cope_dspy.Prices"),
    ({"prices": {"openai/gpt-4o-mini": (0.15, 0.6)}}, "prices must be"),
    ({"adapter": "chat"}, "adapter must be a dspy.Adapter"), ({"temperatures": "hot"}, "temperatures"),
    ({"temperatures": {"goal": 1.0}}, "temperatures"), ({"early_stop": "no"}, "early_stop"),
]


@pytest.mark.parametrize("kwargs, name", BAD_CASCADE_ARGS, ids=[repr(k) for k, _ in BAD_CASCADE_ARGS])
def test_bad_cascade_argument_is_named(kwargs, name, models):
    small, large = models
    TRIED.append(f"Cascade({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
    _raises(lambda: Cascade(**{"small": small.lm, "large": large.lm, **kwargs}), name)


@pytest.mark.parametrize("field, value", [("goal", 3.0), ("guideline", -1), ("large_executor", "cold")])
def test_bad_temperature_is_named(field, value):
    TRIED.append(f"Temperatures({field}={value!r})")
    _raises(lambda: Temperatures(**{field: value}), f"temperatures.{field}")


@pytest.mark.parametrize("name, value", [("n", 0), ("tau1", 2), ("tau2", "x"), ("stages", (0,))])
def test_setting_a_bad_policy_value_on_a_cascade_is_refused(name, value, models):
    small, large = models
    c = Cascade(small=small.lm, large=large.lm)
    TRIED.append(f"cascade.{name} = {value!r}")
    _raises(lambda: setattr(c, name, value), name)
    c(question=Q)  # the cascade still works with its old value
    assert c.policy.n == 8


# -- cascade(...) call fields -------------------------------------------------------------------------------

BAD_CALLS = [
    ({}, "missing input field 'question'"), ({"problem": Q}, "missing input field 'question'"),
    ({"question": None}, "'question' must be a non-empty string"), ({"question": ""}, "'question'"),
    ({"question": "   \n"}, "'question'"), ({"question": 123}, "'question'"), ({"question": b"bytes"}, "'question'"),
    ({"question": ["What is 3+4?"]}, "'question'"),
]


@pytest.mark.parametrize("how", ["call", "acall", "record"])
@pytest.mark.parametrize("fields, words", BAD_CALLS, ids=[repr(f) for f, _ in BAD_CALLS])
def test_bad_call_fields_fail_before_any_lm_call(how, fields, words, models):
    small, large = models
    c = Cascade(small=small.lm, large=large.lm)
    TRIED.append(f"cascade.{how}({', '.join(f'{k}={v!r}' for k, v in fields.items())})")
    run = {"call": lambda: c(**fields), "acall": lambda: asyncio.run(c.acall(**fields)),
           "record": lambda: c.record(**fields)}[how]
    _raises(run, words)
    assert small.calls == []


def test_positional_question_is_a_type_error_before_any_call(models):
    small, large = models
    TRIED.append("cascade('What is 3+4?')  (positional)")
    with pytest.raises(TypeError, match="positional"):
        Cascade(small=small.lm, large=large.lm)("What is 3+4?")
    assert small.calls == []


def test_missing_large_model_is_named_before_the_small_model_is_paid_for(models):
    small, _ = models
    TRIED.append("Cascade(small=..., large=None) with no dspy.configure(lm=...)")
    _raises(lambda: Cascade(small=small.lm)(question=Q), "no large model", "Cascade(large=dspy.LM(...))")
    assert small.calls == []


# -- Budget, Prices, price files -----------------------------------------------------------------------------

BAD_BUDGETS = [
    ({"usd": -1}, "Budget(usd=...)"), ({"usd": "5"}, "Budget(usd=...)"), ({"usd": math.nan}, "Budget(usd=...)"),
    ({"usd": math.inf}, "Budget(usd=...)"), ({"usd": True}, "Budget(usd=...)"), ({"usd": [1]}, "Budget(usd=...)"),
    ({"tokens": 1.5}, "Budget(tokens=...)"), ({"tokens": -3}, "Budget(tokens=...)"),
    ({"tokens": True}, "Budget(tokens=...)"), ({"on_exceed": "ignore"}, "Budget(on_exceed=...)"),
    ({"prices": {"m": (1, 2)}}, "Budget(prices=...)"),
]


@pytest.mark.parametrize("kwargs, name", BAD_BUDGETS, ids=[repr(k) for k, _ in BAD_BUDGETS])
def test_bad_budget_is_named(kwargs, name):
    TRIED.append(f"Budget({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
    _raises(lambda: Budget(**kwargs), name)


def test_a_usd_budget_on_an_unpriced_paid_model_refuses_before_the_call(models):
    small, large = models
    TRIED.append("Budget(usd=1.0) with a large model that has no known price")
    c = Cascade(small=small.lm, large=large.lm, stages=(3,), budget=Budget(usd=1.0))
    _raises(lambda: c(question=Q), "cannot be enforced", "scripted/large", "Prices(")


BAD_PRICES = [
    (["m"], "Prices(overrides=...)"), ("m", "Prices(overrides=...)"), ({"": (1, 2)}, "model names"),
    ({1: (1, 2)}, "model names"), ({"m": (1,)}, "price of 'm'"), ({"m": (-1, 2)}, "input must be >= 0"),
    ({"m": ("a", 2)}, "input must be a number"), ({"m": {"input": 1}}, "missing ['output']"),
    ({"m": {"input": 1, "output": 2, "cached": 3}}, "unknown key(s) ['cached']"),
    ({"m": (True, 1)}, "input must be a number"), ({"m": (1, math.nan)}, "output must be a number"),
    ({"m": (1, math.inf)}, "output must be a number"),
]


@pytest.mark.parametrize("overrides, words", BAD_PRICES, ids=[repr(o) for o, _ in BAD_PRICES])
def test_bad_price_table_is_named(overrides, words):
    TRIED.append(f"Prices({overrides!r})")
    _raises(lambda: Prices(overrides), words)


BAD_PRICE_FILES = [
    ("p.yaml", "a: 1", "must end in .toml or .json"),
    ("p.toml", "[m\ninput=1", "not valid TOML"),
    ("p.json", "{bad", "not valid JSON"),
    ("empty.json", "", "not valid JSON"),
    ("list.json", "[1, 2]", "expected a table of model name -> price, got list"),
    ("negative.json", '{"m": {"input": -1, "output": 2}}', "input must be >= 0"),
    ("nan.json", '{"m": {"input": NaN, "output": 2}}', "input must be a number"),
    ("infinite.json", '{"m": {"input": 1, "output": Infinity}}', "output must be a number"),
    ("word.json", '{"m": "cheap"}', "price of 'm' must be (input, output)"),
    ("nokey.json", '{"": [1, 2]}', "model names"),
    ("extra.toml", "[m]\ninput = 1\noutput = 2\ncached = 3", "unknown key(s) ['cached']"),
    ("bool.json", '{"m": {"input": true, "output": 2}}', "input must be a number"),
    ("missing.toml", "[m]\ninput = 1", "missing ['output']"),
]


@pytest.mark.parametrize("name, text, words", BAD_PRICE_FILES, ids=[n for n, _, _ in BAD_PRICE_FILES])
def test_bad_price_file_names_the_file_and_the_problem(name, text, words, tmp_path):
    path = tmp_path / name
    path.write_text(text)
    TRIED.append(f"Prices.from_file({name}: {text!r})")
    message = _raises(lambda: Prices.from_file(path), words)
    assert str(path) in message


def test_unreadable_price_files(tmp_path):
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for path, words in [(binary, "cannot read the prices file"), (tmp_path / "nope.toml", "No such file"),
                        (tmp_path, "cannot read the prices file"), (None, "Prices.from_file(path)"),
                        (42, "Prices.from_file(path)")]:
        TRIED.append(f"Prices.from_file({path!r})")
        _raises(lambda p=path: Prices.from_file(p), words)


# -- the `cope` CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def no_server(monkeypatch):
    """`cope serve` must never start llama-server in these tests."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a bad flag started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)


BAD_CLI = [  # argparse refuses these: exit 2, the flag named
    (["serve", "--parallel", "0"], "--parallel", "must be >= 1"),
    (["serve", "--parallel", "-2"], "--parallel", "must be >= 1"),
    (["serve", "--parallel", "four"], "--parallel", "expected an integer"),
    (["serve", "--threads", "0"], "--threads", "must be >= 1"),
    (["serve", "--ctx-size", "100"], "--ctx-size", "must be >= 256"),
    (["serve", "--port", "70000"], "--port", "between 1 and 65535"),
    (["serve", "--port", "-1"], "--port", "between 1 and 65535"),
    (["serve", "--port", "http"], "--port", "expected an integer"),
    (["serve", "--bogus"], "--bogus", "unrecognized arguments"),  # not passed on to llama-server
    (["models", "--jsn"], "--jsn", "unrecognized arguments"),
    (["ask", Q, "--max-tokens", "0"], "--max-tokens", "must be >= 1"),
    (["ask", Q, "--max-tokens", "-5"], "--max-tokens", "must be >= 1"),
    (["ask", Q, "--n", "eight"], "--n", "invalid int value"),
    (["ask", Q, "--tau1", "high"], "--tau1", "invalid float value"),
    (["ask", Q, "--task", "code"], "--task", "invalid choice"),
    (["ask"], "question", "required"),
    (["report"], "ledger", "required"),
    (["eval", "gsm9k"], "benchmark", "invalid choice"),
    (["eval", "gsm8k", "--limit", "ten"], "--limit", "invalid int value"),
    (["calibrate", "run"], "--records", "required"),
    (["bogus"], "bogus", "invalid choice"),
    ([], "COMMAND", "required"),
]


@pytest.mark.parametrize("argv, flag, words", BAD_CLI, ids=[" ".join(a) or "(none)" for a, _, _ in BAD_CLI])
def test_bad_cope_flags_exit_2_naming_the_flag(argv, flag, words, capsys, no_server):
    TRIED.append("cope " + " ".join(argv))
    with pytest.raises(SystemExit) as exit_:
        cope_cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and words in err, err


@pytest.mark.parametrize("argv, words", [  # values argparse accepts but cope refuses: exit 1, nothing started
    (["serve", "--ctx-size", "512", "--parallel", "4"], "ctx_size=512 leaves 128 tokens per slot"),
    (["serve", "--model", "no-such-model"], "no-such-model"),
    (["ask", Q, "--n", "0"], "n must be an integer >= 1"),
    (["ask", Q, "--tau1", "1.5"], "tau1 must be a number in [0, 1]"),
    (["ask", Q, "--tau2", "nan"], "tau2 must be a number in [0, 1]"),
    (["ask", "   "], "'question' must be a non-empty string"),
    (["ask", Q, "--price", "cheap"], "--price 'cheap'"),
    (["ask", Q, "--price", "openai/gpt-4o-mini=-1,2"], "--price"),
    (["ask", Q, "--price", "openai/gpt-4o-mini=nan,2"], "prices must be finite numbers"),
    (["report", "MISSING"], "no cost ledger at"),
    (["report", "NOT_A_LEDGER"], "is not a readable cope-dspy cost ledger"),
])
def test_cope_values_refused_with_exit_1_before_anything_starts(argv, words, capsys, no_server, tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_text("this is not SQLite")
    argv = [{"MISSING": str(tmp_path / "missing.sqlite"), "NOT_A_LEDGER": str(junk)}.get(a, a) for a in argv]
    TRIED.append("cope " + " ".join(argv))
    assert cope_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err, err


def test_cope_eval_limit_below_one_is_refused_before_loading_data(no_server):
    TRIED.append("cope eval gsm8k --limit 0")
    with pytest.raises(SystemExit, match="--limit must be >= 1"):
        cope_cli.main(["eval", "gsm8k", "--limit", "0"])


PLACEHOLDERS = {"ask": [Q], "report": ["ledger.sqlite"], "eval": ["gsm8k"], "calibrate": ["run"]}


def test_every_cope_subcommand_refuses_an_unknown_flag(capsys, no_server):
    names = [name for name, *_ in cope_cli._COMMANDS]
    assert {"models", "serve"} <= set(names)
    for name in names:
        argv = [name, *PLACEHOLDERS.get(name, []), "--no-such-flag"]
        TRIED.append("cope " + " ".join(argv))
        with pytest.raises(SystemExit) as exit_:
            cope_cli.main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and ("--no-such-flag" in err or "required" in err), (name, err)


# -- calibration --------------------------------------------------------------------------------------------


@pytest.fixture
def recorded(models, tmp_path):
    small, large = models
    c = Cascade(small=small.lm, large=large.lm, n=2)
    devset = [dspy.Example(question=Q, answer="7").with_inputs("question")]
    path = tmp_path / "dev.jsonl"
    records = record(c, devset, lambda ex, pred: pred.answer == ex.answer, path, progress=False)
    large.calls.clear()  # recording may pay; what follows must not
    return c, devset, records, path


def _metric(ex, pred):
    return pred.answer == ex.answer


def test_bad_record_arguments_fail_before_any_call(models, tmp_path):
    small, large = models
    c = Cascade(small=small.lm, large=large.lm, n=2)
    ok = [dspy.Example(question=Q, answer="7").with_inputs("question")]
    out = tmp_path / "r.jsonl"
    cases = [
        (lambda: record(c, [], _metric, out, progress=False), "devset is empty"),
        (lambda: record(c, ok, "accuracy", out, progress=False), "metric must be a function"),
        (lambda: record(c, ok, _metric, out, concurrency=0, progress=False), "concurrency must be an integer"),
        (lambda: record(c, ok, _metric, out, variant="", progress=False), "variant must be"),
        (lambda: record(c, [{"question": Q}], _metric, out, progress=False), "devset[0] is a dict"),
        (lambda: record(c, [dspy.Example(question=Q)], _metric, out, progress=False), "with_inputs"),
        (lambda: record("cascade", ok, _metric, out, progress=False), "needs a cope_dspy.Cascade"),
        (lambda: record(Cascade(small=small.lm, large=large.lm, stages=(1, 2)), ok, _metric, out, progress=False),
         "needs stage 3"),
        (lambda: record(c, [dspy.Example(question="").with_inputs("question")], _metric, out, progress=False),
         "'question' must be a non-empty string"),
    ]
    for run, words in cases:
        TRIED.append(f"record(...): {words}")
        _raises(run, words)
    assert small.calls == []


def test_bad_calibration_settings_are_named(recorded, tmp_path):
    _, _, records, path = recorded
    cases = [
        (lambda: replay(records, tau1=2), "tau1"), (lambda: replay(records, tau2=-1), "tau2"),
        (lambda: replay(records, n=0), "n must be"), (lambda: replay(records, n=99), "n=99"),
        (lambda: replay(records, stages=(4,)), "stages"), (lambda: replay(tmp_path / "nope.jsonl"), "nope.jsonl"),
        (lambda: calibrate(records, n_trials=-1, storage="memory"), "n_trials"),
        (lambda: calibrate(records, n_trials="10", storage="memory"), "n_trials"),
        (lambda: calibrate(records, objective="accuracy", storage="memory"), "objective"),
        (lambda: calibrate(records, constraint="cheap", storage="memory"), "constraint"),
        (lambda: calibrate(records, sampler="bogus", storage="memory", n_trials=1), "sampler"),
        (lambda: calibrate(records, stages=(5,), storage="memory", n_trials=1), "stages"),
        (lambda: calibrate(records, variants=["nope"], storage="memory", n_trials=1), "variants"),
        (lambda: calibrate(tmp_path / "missing.jsonl"), "missing.jsonl"),
        (lambda: within_points_of_large(-1), "within_points_of_large(points)"),
        (lambda: within_points_of_large("1"), "within_points_of_large(points)"),
        (lambda: max_usd_per_1k(-1), "max_usd_per_1k(usd)"), (lambda: max_usd_per_1k(math.nan), "max_usd_per_1k"),
    ]
    for run, words in cases:
        TRIED.append(f"calibration: {words}")
        _raises(run, words)


@pytest.mark.parametrize("argv, code, words", [
    (["run", "--records", "MISSING"], 2, "cannot read records file"),
    (["run", "--records", "DEV", "--trials", "-5", "--storage", "memory"], 2, "n_trials must be"),
    (["run", "--records", "DEV", "--trials", "abc"], 2, "argument --trials: invalid int value"),
    (["run", "--records", "DEV", "--within-points", "-1", "--storage", "memory"], 2, "within_points_of_large"),
    (["run", "--records", "DEV", "--task", "bogus"], 2, "--task 'bogus'"),
    (["run", "--records", "DEV", "--sampler", "random"], 2, "argument --sampler: invalid choice"),
    (["worker", "--records", "DEV"], 2, "the following arguments are required"),
])
def test_bad_calibrate_cli_flags(argv, code, words, recorded, capsys, tmp_path):
    _, _, _, path = recorded
    argv = [{"DEV": str(path), "MISSING": str(tmp_path / "missing.jsonl")}.get(a, a) for a in argv]
    TRIED.append("python -m cope_dspy.calibrate " + " ".join(argv))
    try:
        got = calibrate_main(argv)
    except SystemExit as exit_:
        got = exit_.code
    assert got == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err, err


def test_calibration_storage_trials_and_grid_are_checked():
    from cope_dspy.calibrate import _storage_url, grid_settings, run_worker

    with pytest.raises(ValueError, match="not an Optuna RDB URL"):
        _storage_url("nosuch://x")
    with pytest.raises(ValueError, match="n_trials must be an integer >= 1"):
        run_worker("unused.jsonl", "sqlite:///unused.db", "s", -1)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        grid_settings(0)


def test_eval_flags_and_prices_fail_before_any_server_starts(monkeypatch):
    import cope_dspy.pair as pair
    from evals.run import main as run_eval

    monkeypatch.setattr(pair, "open_models", lambda *a, **k: pytest.fail("a server was started"))
    for argv in (["gsm8k", "--concurrency", "0"], ["gsm8k", "--max-tokens", "0"], ["gsm8k", "--n", "0"]):
        with pytest.raises(SystemExit, match="must be >= 1"):
            run_eval(argv)
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        run_eval(["gsm8k", "--price", "m=nan,1"])
