"""Ollama's two APIs, as far as they can be exercised without an Ollama binary.

`models.ollama()` uses Ollama's native /api/chat (its request shape is checked against the documented
API in tests/unit/test_models.py). Ollama's other endpoint, /v1/chat/completions, is OpenAI-compatible as
llama.cpp's is: here DSPy's `ollama_chat/` provider on that path runs against the real llama.cpp server,
which is the set-up for an Ollama started with OLLAMA_CONTEXT_LENGTH.
"""

import dspy
import pytest

from cope_dspy.errors import ModelUnavailable
from cope_dspy.models import preflight

pytestmark = pytest.mark.integration


def test_ollama_chat_provider_on_the_v1_path(local_server):
    lm = dspy.LM(
        f"ollama_chat/{local_server.model_name}",
        api_base=local_server.base_url,
        temperature=0.7,
        max_tokens=8,
        cache=False,
    )
    out = lm("Say hi", seed=1, rollout_id=7)
    assert isinstance(out[0], str) and out[0].strip()
    assert 0 < lm.history[-1]["usage"]["completion_tokens"] <= 8


def test_preflight_tells_llama_cpp_from_ollama(local_server):
    with pytest.raises(ModelUnavailable, match="is not Ollama"):
        preflight(local_server.model_name, host=local_server.url, pull=False)
