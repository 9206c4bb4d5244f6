"""Reliability suite: fault injection, bad input, secrets, concurrency, soak.

Every fault the suite injects is counted (by the fault servers, plus connections refused by a closed port),
and every cascade call made under a fault goes through `tally.run`, which classifies its outcome:

    answer        a prediction whose accepted answer is right
    not accepted  a prediction with accepted=False (no answer presented as confident)
    clear error   a CopeError (LargeModelError, CopeInputError, ...) with a message
    crash         any other exception escaping a public entry point (counted, then re-raised)
    silent wrong  a prediction with accepted=True whose answer is not the truth

The totals are printed at the end of the run: "N faults injected, 0 crashes, 0 silent wrong answers".
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from fault_server import ...`, `from reliability_kit import ...`
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `from evals.benchmarks import ...`

from fault_server import FaultServer  # noqa: E402
from reliability_kit import BAD_INPUTS, TALLY, Tally  # noqa: E402


@pytest.fixture
def tally() -> Tally:
    return TALLY


@pytest.fixture
def serve():
    """serve(plan, **kwargs) -> a started FaultServer, counted in the tally and stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(*args, **kwargs) -> FaultServer:
            server = stack.enter_context(FaultServer(*args, **kwargs))
            TALLY.servers.append(server)
            return server

        yield start


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not TALLY.servers and not TALLY.refused and not TALLY.outcomes and not BAD_INPUTS:
        return
    o = TALLY.outcomes
    tr = terminalreporter
    tr.section("reliability")
    tr.write_line(f"{TALLY.faults} faults injected, {o['crash']} crashes, {o['silent wrong']} silent wrong answers")
    kinds = Counter()
    for s in TALLY.servers:
        kinds.update(s.faults)
    if TALLY.refused:
        kinds["refused"] += TALLY.refused
    tr.write_line("faults by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    tr.write_line("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(o.items())))
    if BAD_INPUTS:
        tr.write_line(f"{len(BAD_INPUTS)} bad inputs tried, each refused with an error naming it")
    for line in TALLY.crash_details + TALLY.wrong_details:
        tr.write_line(f"  {line}")
