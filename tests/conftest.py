"""Test environment: offline, and DSPy's disk cache in a throwaway directory (set before dspy loads)."""

import os
import sys
import tempfile

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="cope-dspy-test-cache-"))
sys.path.insert(0, os.path.dirname(__file__))  # `from fakes import ...`
