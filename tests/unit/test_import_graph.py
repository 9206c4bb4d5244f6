"""scripts/import_graph.py: the project's imports run one way, and the check catches each kind of violation.

The first test is the check itself on this checkout: it fails on a violation that is not in the script's
allowlist (issue 15) and on an allowlist entry that no longer happens.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "import_graph.py"


def load_script():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


graph = load_script()


def test_this_checkout_has_no_new_violation_and_the_check_imports_nothing_heavy():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('import_graph', {str(SCRIPT)!r})\n"
        "m = sys.modules['import_graph'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "rc = m.main(['--quiet'])\n"
        "heavy = sorted(n for n in sys.modules if n.split('.')[0] in ('cope_dspy', 'evals', 'dspy', 'litellm'))\n"
        "print('heavy:', heavy)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "heavy: []" in done.stdout
    assert " 0 new)" in done.stdout


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name in ("cope_dspy/__init__.py", "evals/__init__.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


def violations(root: Path) -> set[str]:
    _imports, found = graph.check(graph.project_files(root), root)
    return set(found)


def test_a_clean_tree_has_no_violation_and_every_allowlist_entry_is_then_stale(tmp_path, capsys, monkeypatch):
    write_tree(
        tmp_path,
        {
            "cope_dspy/errors.py": "class CopeError(Exception): ...\n",
            "cope_dspy/tasks.py": "from .errors import CopeError\n",
            "cope_dspy/cascade.py": "from cope_dspy.tasks import CopeError\nfrom . import errors\n",
            "evals/run.py": "from cope_dspy.cascade import CopeError\n",
            "examples/quick.py": "from cope_dspy import cascade\n",
        },
    )
    assert violations(tmp_path) == set()
    assert graph.main(["--quiet", "--root", str(tmp_path)]) == 0
    monkeypatch.setattr(graph, "ALLOWED", {"cycle: cope_dspy.a, cope_dspy.b": "an old issue"})
    assert graph.main(["--quiet", "--root", str(tmp_path)]) == 1  # the allowlist names what is not there
    assert capsys.readouterr().out.count("STALE allowlist entry") == 1


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    write_tree(
        tmp_path,
        {
            "cope_dspy/costs.py": "from cope_dspy.ledger import Ledger\n",
            "cope_dspy/ledger.py": "def summary():\n    from .costs import x\n    return x\n",
        },
    )
    assert violations(tmp_path) == {"cycle: cope_dspy.costs, cope_dspy.ledger"}


def test_an_upward_import_is_found_even_inside_a_function(tmp_path):
    write_tree(
        tmp_path,
        {
            "cope_dspy/cascade.py": "class Cascade: ...\n",
            "cope_dspy/costs.py": "def f():\n    from cope_dspy.cascade import Cascade\n",
            "cope_dspy/tasks.py": "import cope_dspy.cascade\n",
        },
    )
    assert violations(tmp_path) == {
        "upward: cope_dspy.costs (leaves) -> cope_dspy.cascade (cascade)",
        "upward: cope_dspy.tasks (tasks/consensus) -> cope_dspy.cascade (cascade)",
    }


def test_the_library_importing_evals_is_found(tmp_path):
    write_tree(
        tmp_path,
        {
            "cope_dspy/cli.py": "def main():\n    from evals.run import main as run\n",
            "evals/run.py": "def main(): ...\n",
        },
    )
    assert violations(tmp_path) == {"evals: cope_dspy.cli -> evals.run"}


@pytest.mark.parametrize(
    "line",
    [
        'sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))',
        'sys.path.append("tests")',
        'sys.path += ["../tests/unit"]',
    ],
)
def test_non_test_code_putting_tests_on_sys_path_is_found(tmp_path, line):
    write_tree(tmp_path, {"evals/bench.py": f"import sys\nfrom pathlib import Path\n{line}\n"})
    assert violations(tmp_path) == {"tests: evals/bench.py puts tests/ on sys.path"}


def test_non_test_code_importing_from_tests_is_found(tmp_path):
    write_tree(tmp_path, {"examples/demo.py": "from tests.fakes import math_model\n"})
    assert violations(tmp_path) == {"tests: examples.demo imports tests.fakes"}


def test_a_private_name_used_across_modules_is_found(tmp_path):
    write_tree(
        tmp_path,
        {
            "cope_dspy/costs.py": "def _find_entry(): ...\n_x = 1\n__all__ = []\n",
            "cope_dspy/cascade.py": "from .costs import _find_entry, __all__\n",
            "evals/records.py": "class _Writer: ...\n",
            "evals/report.py": "def f():\n    from .records import _Writer\n",
            "evals/rescore.py": "import cope_dspy.costs as costs\nprint(costs._x)\n",
            "evals/ok.py": "_own = 1\nprint(_own)\n",
        },
    )
    assert violations(tmp_path) == {
        "private: cope_dspy.cascade uses cope_dspy.costs._find_entry",
        "private: evals.report uses evals.records._Writer",
        "private: evals.rescore uses cope_dspy.costs._x",
    }


def test_a_library_module_in_no_layer_is_an_error_that_says_where_to_add_it(tmp_path):
    write_tree(
        tmp_path, {"cope_dspy/newthing.py": "from .errors import CopeError\n", "cope_dspy/errors.py": ""}
    )
    with pytest.raises(SystemExit, match="cope_dspy.newthing is in no layer: add it to LAYERS"):
        violations(tmp_path)


def test_the_cost_leaves_import_no_cycle_and_usage_imports_no_project_module():
    imports, found = graph.check(graph.project_files(ROOT), ROOT)
    leaves = {"cope_dspy.costs", "cope_dspy.ledger", "cope_dspy.usage", "cope_dspy.prices"}
    assert not [v for v in found if v.startswith("cycle:") and leaves & set(v[len("cycle: "):].split(", "))]
    targets = {name: {i.target for i in imports[name] if graph.in_project(i.target)} for name in leaves}
    assert targets["cope_dspy.usage"] == set()  # the record type: both costs and ledger read it
    assert "cope_dspy.costs" not in targets["cope_dspy.ledger"]
