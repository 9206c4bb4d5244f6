"""Tests a user has for a function: the examples its docstring shows, as `Code` tests.

Two kinds of example are read, each as written (a wrong example stays wrong: a user has no reference
solution to check it against):

- doctest examples (`>>> f(2)` then `4`), run by the standard library's doctest runner: `doctest_tests`;
- examples written out, in the usual notations: `f(2) == 4`, `f(2) => 4`, `==>`, `->`, `➞`, `f(2) = 4`,
  `f(2) returns 4`, `f(2) should return 4`, `f(2)  # => 4` (a leading `*`, `-` or "for" allowed); "For x = 2
  the output should be 4" and "For a = 1, b = 2, the result should be 3"; and an "Input: a = 1, b = 2" block
  (or one "name : value" per line, or one value for a one-parameter function) followed by "Output: 3".
  `example_tests` makes one `assert f(2) == 4` of each. Only examples whose arguments and value are Python
  literals count (named arguments must be the function's parameters; `true`/`false` read as True/False; a
  worked value such as `= 1 + 9 = 10` counts as its last part; a trailing `# comment` or "(remark)" is
  dropped); anything else is prose and is skipped. Such text is not always an example: a docstring that
  defines a sequence by `tri(1) = 3` yields a test the reference solution (which returns a list) fails.

`docstring_tests` gives the doctests when there are any, else the example lines.

    from cope_dspy.user_tests import docstring_tests

    # stub.py holds `def add(a, b):` and a docstring with the line "add(2, 2) == 4"
    docstring_tests(open("stub.py").read(), "add")  # ['assert add(2, 2) == 4']
"""

from __future__ import annotations

import ast
import doctest
import re

from .errors import CopeInputError

__all__ = ["docstring_tests", "doctest_tests", "example_tests"]

# One doctest example, run by the standard library's doctest runner on a copy of the program's namespace
# (as `python -m doctest` would: default option flags), failing with doctest's own report.
_DOCTEST_UNIT = """import doctest as _cope_doctest
_cope_report = []
_cope_runner = _cope_doctest.DocTestRunner(verbose=False)
_cope_runner.run(_cope_doctest.DocTest([_cope_doctest.Example({source!r}, {want!r}, exc_msg={exc_msg!r})],
                                       dict(globals()), {name!r}, None, 0, None), out=_cope_report.append)
assert not _cope_runner.failures, "".join(_cope_report)[-500:]
"""

# "f(args) <arrow> value": the notations example lines use for "returns" ("=" last: "==" and "=>" first)
_ARROW = r"(?:==>|=>|==|->|➞|→|should\s+return|returns?|=)"
_LEAD = r"^\s*(?:[*-]\s*|for\s+)?"
# "For x = 2 the output should be 4", "For s = 'ab', c = 'a', the result should be 'b'"
_FOR = re.compile(r"^\s*for\s+(?P<args>\w+\s*=.+?),?\s+the\s+(?:output|result)\s+should\s+be\s+(?P<want>.+?)\s*$",
                  re.I)
# "Input: arr = [1, 2], k = 1" (or "Input:" and one "name : value" per line) then "Output: [1]"
_INPUT = re.compile(r"^\s*input\s*:\s*(?P<args>.*)$", re.I)
_OUTPUT = re.compile(r"^\s*output\s*:\s*(?P<want>.+?)\s*$", re.I)
_NAME_COLON = re.compile(r"^\s*(\w+)\s*:\s*")
_WORDS = {"true": "True", "false": "False", "none": "None"}


def docstring_tests(source: str, function: str | None = None) -> list[str]:
    """The tests a user reads off `function`'s docstring in `source` (every function's when None): its
    doctest examples when it has any, else its example lines (`example_tests`). [] when it shows neither."""
    return doctest_tests(source, function) or example_tests(source, function)


def doctest_tests(source: str, function: str | None = None) -> list[str]:
    """Tests for `Code` from the doctest examples (`>>> call` then the expected output) in the docstrings of
    `source`, Python source such as a function stub (a `def` and its docstring; a missing body is fine): those
    of `function` only, when given. One test per example, run by the standard library's doctest runner with
    its default options, as `python -m doctest` would. Returns [] when there is no doctest example (text such
    as "f(2) == 4" is not one: see `example_tests`); raises `CopeInputError` when doctest refuses a
    docstring."""
    parser = doctest.DocTestParser()
    try:
        examples = [ex for doc in _docstrings(source, function) for ex in parser.get_examples(doc)]
    except ValueError as exc:  # doctest refuses the docstring (e.g. inconsistent indentation)
        raise CopeInputError(f"the docstring's examples are not valid doctests: {exc}") from None
    return [_DOCTEST_UNIT.format(source=ex.source, want=ex.want, exc_msg=ex.exc_msg, name=f"{function or 'doc'}[{i}]")
            for i, ex in enumerate(examples)]


def example_tests(source: str, function: str | None = None) -> list[str]:
    """One `assert call == value` per example in the docstrings of `source` (those of `function` only, when
    given) that calls the documented function with literal arguments and gives a literal value, in the
    notations the module docstring lists. Anything that is not such an example is skipped."""
    tests = []
    for name, params, doc in _functions(source, function):
        call_line = re.compile(_LEAD + rf"(?P<call>{re.escape(name)}\s*\(.*\))\s*(?:#\s*)?{_ARROW}\s*(?P<want>.+?)\s*$",
                               re.I)
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            if m := call_line.match(line):
                call = _literal_call(m["call"], name)
            elif m := _FOR.match(line):
                call = _literal_call(f"{name}({m['args']})", name, params)
            elif m := _INPUT.match(line):
                call, m = _input_output(lines[i:], name, params)
            else:
                continue
            want = _literal(m["want"]) if m else None
            if call is not None and want is not None:
                tests.append(f"assert {call} == {want}")
    return tests


def _input_output(lines: list[str], name: str, params: list[str]) -> tuple[str | None, re.Match | None]:
    """The call an "Input: ..." block makes (up to its "Output:" line, within 6 lines) and that line's match."""
    args = [_INPUT.match(lines[0])["args"]]
    for line in lines[1:7]:
        if out := _OUTPUT.match(line):
            parts = [_NAME_COLON.sub(r"\1 = ", a.strip()) for a in args if a.strip()]  # "grid : [..]" -> "grid = [..]"
            return _literal_call(f"{name}({', '.join(parts)})", name, params), out
        args.append(line)
    return None, None


def _literal_call(text: str, name: str, params: list[str] | None = None) -> str | None:
    """`text` when it is one call of `name` whose arguments are all Python literals, else None. With
    `params` (a call rebuilt from "x = 1" or "Input:" text), its keywords must name parameters and a
    positional call must give exactly one argument to a one-parameter function."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name):
        return None
    if params is not None and (any(k.arg not in params for k in node.keywords)
                               or (node.args and (len(node.args) != 1 or len(params) != 1))):
        return None
    try:
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            ast.literal_eval(arg)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return ast.unparse(node)


def _literal(text: str) -> str | None:
    """The expected value as Python source, or None when it is not a literal. Tried as written, then up to a
    comment ("# ...") or a parenthesised remark; a worked value ("1 + 9 = 10") is its last part; `true` /
    `false` / `none` are Python's; a final full stop or comma is dropped."""
    for cut in (text, text.split("#", 1)[0], re.split(r"\s\(", text, maxsplit=1)[0]):
        value = _value(cut)
        if value is not None:
            return value
    return None


def _value(text: str) -> str | None:
    text = text.strip().rstrip(".,;").strip()
    if "=" in text and not text.startswith(("'", '"')):
        text = text.rsplit("=", 1)[1].strip()
    text = _WORDS.get(text.lower(), text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return repr(value)


def _functions(source: str, function: str | None) -> list[tuple[str, list[str], str]]:
    """(name, parameter names, docstring) of each function in `source` (only `function`, when given)."""
    tree = _parse_stub(source)
    return [(node.name, [a.arg for a in node.args.args], ast.get_docstring(node) or "") for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and function in (None, node.name)]


def _docstrings(source: str, function: str | None) -> list[str]:
    return [doc for _, _, doc in _functions(source, function)]


def _parse_stub(source: str) -> ast.Module:
    """`source` parsed; a stub whose last function has a docstring and no body gets `pass` first."""
    try:
        return ast.parse(source)
    except SyntaxError:
        last = [line for line in source.splitlines() if line.strip()][-1:] or [""]
        indent = last[0][: len(last[0]) - len(last[0].lstrip())]
        try:
            return ast.parse(f"{source.rstrip()}\n{indent}pass\n")
        except SyntaxError as exc:
            raise CopeInputError(f"docstring tests need Python source (a function stub may lack its body): {exc}") from None
