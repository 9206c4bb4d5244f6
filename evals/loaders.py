"""Benchmark loaders: `load("gsm8k")` gives `dspy.Example`s from the Hugging Face hub or, offline, from the
copies committed in `evals/data/` (see `evals/data/LICENSES.md`).

Every example has an `id`, a `question` (its only input) and the gold fields its metric needs:
`answer` for gsm8k / math500; `tests`, `hidden_tests`, `user_tests`, `test_setup`, `entry_point` for
mbpp / humaneval; `turns`, `reference` for mtbench. `solution` is the reference solution where the
benchmark has one.

Code acceptance (`acceptance=`): `tests` is what the cascade gets to accept a program. "user" (the default)
gives it only the tests a user would have: MBPP's first assert (the one its prompt shows), HumanEval's
docstring examples run as doctests (none for the 88 of 164 prompts without a `>>>` example, nor for
HumanEval/51, whose docstring doctest refuses: those problems cannot be accepted on tests). "grading" gives it every grading test (the rule of the first recordings).
Grading always uses `hidden_tests`: every test of the benchmark.

Splits: each benchmark's test set is divided once and for all into `dev` (for calibration) and `test`
(for reporting). Ids are ranked by sha256(f"{SPLIT_SEED}:{id}") and the first round(DEV_FRACTION * n)
are dev. Ids depend only on the benchmark (row index in its official order, or its own task id), so the
split is the same on every run, machine and source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import datasets
import dspy

from .benchmarks import BENCHMARKS, get

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
ACCEPTANCE = ("user", "grading")  # which tests accept a code candidate: see the module docstring
DEV_FRACTION = 0.2
SPLIT_SEED = "cope-dspy-v1"
HUB_PROBE_TIMEOUT_S = 2.0




def load(
    name: str, split: str = "test", limit: int | None = None, source: str = "auto", acceptance: str = "user"
) -> list[dspy.Example]:
    """Examples of benchmark `name` ("gsm8k", "math500", "mbpp", "humaneval", "mtbench").

    split: "test" (reporting), "dev" (calibration) or "all". limit: keep the first `limit` of the split,
    in the benchmark's own order. source: "hub" (Hugging Face hub, fail if unreachable), "local" (the
    committed copy) or "auto" (the hub unless offline or unreachable, then the committed copy).
    acceptance (code benchmarks): "user" (`tests` = the tests a user has) or "grading" (`tests` = every
    grading test); see the module docstring.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}")
    if split not in ("test", "dev", "all"):
        raise ValueError(f"split must be 'test', 'dev' or 'all', not {split!r}")
    if source not in ("auto", "hub", "local"):
        raise ValueError(f"source must be 'auto', 'hub' or 'local', not {source!r}")
    if acceptance not in ACCEPTANCE:
        raise ValueError(f"acceptance must be one of {ACCEPTANCE}, not {acceptance!r}")

    bench = get(name)
    examples = [
        dspy.Example(**_with_acceptance(bench.to_example(i, row), acceptance)).with_inputs(*bench.inputs)
        for i, row in enumerate(_rows(name, source))
    ]
    if split != "all":
        dev = dev_ids([ex.id for ex in examples])
        examples = [ex for ex in examples if (ex.id in dev) == (split == "dev")]
    return examples if limit is None else examples[:limit]


def _with_acceptance(fields: dict, acceptance: str) -> dict:
    """A code example's `tests` (what accepts a candidate) under the acceptance rule."""
    if "hidden_tests" not in fields:
        return fields
    return {**fields, "tests": fields["user_tests"] if acceptance == "user" else fields["hidden_tests"]}


def dev_ids(ids: list[str], fraction: float = DEV_FRACTION) -> set[str]:
    """The ids that form the dev split: a seeded shuffle by sha256 of the id, first `fraction` of it."""
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{SPLIT_SEED}:{i}".encode()).hexdigest())
    return set(ranked[: round(fraction * len(ranked))])


@cache
def _rows(name: str, source: str) -> tuple[dict, ...]:
    bench = get(name)
    if source == "hub" or (source == "auto" and not _offline()):
        path, config, split = bench.hub
        if source == "hub" or _hub_reachable():
            try:
                return tuple(datasets.load_dataset(path, config, split=split))
            except (OSError, datasets.exceptions.DatasetsError) as e:
                if source == "hub":
                    raise
                log.warning("%s: hub load of %s failed (%s); using evals/data/%s", name, path, e, bench.file)
        else:
            log.warning("%s: Hugging Face hub unreachable; using evals/data/%s", name, bench.file)
    data = datasets.load_dataset("json", data_files=str(DATA_DIR / bench.file), split="train")
    return tuple(data)


def _offline() -> bool:
    flags = (os.environ.get(var, "").upper() for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)


@cache
def _hub_reachable() -> bool:
    # A plain TCP connect fails in milliseconds offline, where `load_dataset` would retry for ~25 s.
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
