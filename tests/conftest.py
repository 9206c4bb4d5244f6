"""Test environment: offline, and DSPy's disk cache in a throwaway directory (set before dspy loads)."""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "DSPY_CACHEDIR" not in os.environ:  # a throwaway cache per test process, removed when it exits
    os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="cope-dspy-test-cache-")
    atexit.register(shutil.rmtree, os.environ["DSPY_CACHEDIR"], ignore_errors=True)
sys.path.insert(0, os.path.dirname(__file__))  # `from fakes import ...`


import pytest  # noqa: E402 (after the environment above, which must be set before dspy loads)


@pytest.fixture
def ctrl_c():
    """SIGINT raises KeyboardInterrupt, as at a terminal, even when pytest was started in the background by a
    script (a background job inherits SIGINT ignored, and Python then installs no handler)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
