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
