"""The open-ended text task: logprobs in DSPy's shapes, the perplexity consensus, the cascade, the probe."""

import math
from types import SimpleNamespace

import dspy
import pytest
from dspy.lm15 import TokenLogprob
from fakes import ScriptedLM, by_text, writer

from cope_dspy import Cascade, CopeInputError, ModelUnavailable
from cope_dspy.consensus import Candidate
from cope_dspy.text import Perplexity, Text, mean_logprob, token_logprobs

Q = "Explain in two sentences why the sky is blue."


# ---------------------------------------------------------------- logprobs in every shape


def test_score_reads_the_shape_dspy_puts_on_the_prediction():
    lm = writer("scripted/small", lambda call: "Because of Rayleigh scattering.", logprob=lambda t: -0.25)
    with dspy.context(lm=lm.lm):
        out = dspy.Predict(Text().signature("small_executor"))(question=Q, plans="", config={"logprobs": True})
    assert out.logprobs["content"][0]["token"] == "The"  # DSPy 3.4: OpenAI chat shape, an AttributeDict
    assert Text().score(out) == pytest.approx(-0.25)
    with dspy.context(lm=lm.lm):
        plain = dspy.Predict(Text().signature("small_executor"))(question=Q, plans="")
    assert Text().score(plain) is None  # not requested: no logprobs on the prediction


def test_token_logprobs_accepts_every_known_shape():
    openai_dict = {"content": [{"token": "a", "logprob": -1.0, "bytes": [97], "top_logprobs": []},
                               {"token": "b", "logprob": -3.0, "bytes": [98], "top_logprobs": []}]}
    litellm_obj = SimpleNamespace(content=[SimpleNamespace(token="a", logprob=-1.0),
                                           SimpleNamespace(token="b", logprob=-3.0)])
    ollama_native = [{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": -3.0}]
    lm15 = (TokenLogprob("a", -1.0), TokenLogprob("b", -3.0))
    completions = {"tokens": ["a", "b", "c"], "token_logprobs": [None, -1.0, -3.0]}
    for shape in (openai_dict, litellm_obj, ollama_native, lm15, completions):
        assert token_logprobs(shape) == [-1.0, -3.0]
        assert mean_logprob(shape) == -2.0
    for empty in (None, {"content": []}, {"content": None}, [], "text", {"other": 1}):
        assert mean_logprob(empty) is None


# ---------------------------------------------------------------- the consensus


def test_perplexity_picks_the_lowest_nll_candidate():
    b = Perplexity().ballot(4, 0.5)
    assert b.wave() == 4  # all at once: the best of n is not known before
    b.add([Candidate(0, answer="a", score=-0.9), Candidate(1, answer="b", score=-0.2),
           Candidate(2, answer="c", score=None), Candidate(3, answer=None, score=-0.01)])
    assert b.wave() == 0
    d = b.decision()
    assert (d.chosen.index, d.supporters) == (1, [d.chosen])
    assert d.confidence == pytest.approx(math.exp(-0.2)) and d.accepted
    assert d.candidates[1].extra["perplexity"] == pytest.approx(math.exp(0.2))
    assert d.candidates[3].score is None  # no answer: abstains even with a score


def test_perplexity_threshold_and_abstentions():
    b = Perplexity().ballot(2, 0.9)
    b.add([Candidate(0, answer="a", score=-0.5), Candidate(1, answer="b", score=-0.5)])
    d = b.decision()
    assert (d.accepted, d.chosen.index) == (False, 0)  # exp(-0.5) = 0.61 < 0.9; ties go to the earliest
    b = Perplexity().ballot(2, 0.5)
    b.add([Candidate(0, answer="a"), Candidate(1, answer=None)])
    d = b.decision()
    assert (d.accepted, d.confidence, d.chosen.index) == (False, 0.0, 0)
    b = Perplexity().ballot(8, 1.0)
    assert b.wave() == 1  # tau = 1 never accepts: one sample is enough


# ---------------------------------------------------------------- the cascade


def test_cascade_stage_one_returns_the_most_likely_response():
    small = writer("scripted/small", lambda call: f"Response R{call.rollout_id}.",
                   logprob=by_text({"R2": -0.05, "R0": -0.4}, default=-2.0))
    large = writer("scripted/large", lambda call: "Large response.")
    pred = Cascade(small=small.lm, large=large.lm, task=Text(), n=4, tau1=0.9)(question=Q)
    assert (pred.stage, pred.answer) == (1, "Response R2.")
    assert pred.confidence == pytest.approx(math.exp(-0.05))
    samples = [c for c in small.by_role("execute") if c.question]  # not the probe's one-token call
    assert len(samples) == 4 and large.calls == []
    scores = [c["score"] for c in pred.trace[0]["candidates"]]
    assert scores == pytest.approx([-0.4, -2.0, -0.05, -2.0])


def test_cascade_escalates_when_perplexity_is_above_the_threshold():
    small = writer("scripted/small", lambda call: f"Rambling {call.rollout_id}.", logprob=lambda t: -1.5)
    large = writer("scripted/large", lambda call: "The sky is blue because of Rayleigh scattering.", refuse=True)
    pred = Cascade(small=small.lm, large=large.lm, task=Text(), n=2, tau1=0.5, tau2=0.5)(question=Q)
    assert (pred.stage, pred.answer) == (3, "The sky is blue because of Rayleigh scattering.")
    votes = [t for t in pred.trace if t["kind"] == "vote"]
    assert [v["confidence"] for v in votes] == pytest.approx([math.exp(-1.5)] * 2)
    assert [c.role for c in large.calls] == ["guideline", "execute"]  # never asked for logprobs (refuse=True)


def test_samples_without_logprobs_abstain_and_escalate():
    small = writer("scripted/small", lambda call: "A reply.", logprob=lambda t: None if "reply" in t else -0.1)
    large = writer("scripted/large", lambda call: "Final.")
    pred = Cascade(small=small.lm, large=large.lm, task=Text(), n=2)(question=Q)
    assert (pred.stage, pred.answer) == (3, "Final.")


# ---------------------------------------------------------------- the probe


def test_probe_fails_at_construction_when_the_small_model_returns_no_logprobs():
    silent = writer("scripted/small", lambda call: "x", logprob=lambda t: None)
    large = writer("scripted/large", lambda call: "x")
    with pytest.raises(CopeInputError, match="returned no logprobs; .*llama-server.*Ollama"):
        Cascade(small=silent.lm, large=large.lm, task=Text())
    Cascade(small=silent.lm, large=large.lm, task=Text(probe=False))  # the check can be skipped
    ok = writer("scripted/small", lambda call: "x")
    assert Text.probe(ok.lm) == 4
    Cascade(small=ok.lm, large=large.lm, task=Text())
    assert large.calls == []  # only the small model is probed


def test_probe_errors_name_their_cause():
    large = writer("scripted/large", lambda call: "x")
    refusing = writer("scripted/small", lambda call: "x", refuse=True)
    with pytest.raises(CopeInputError, match="refused logprobs"):
        Cascade(small=refusing.lm, large=large.lm, task=Text())
    down = ScriptedLM("scripted/small", lambda call: ConnectionError("connection refused"))
    with pytest.raises(ModelUnavailable, match="probe=False"):
        Text.probe(down.lm)


def test_routes_known_to_drop_logprobs_fail_without_a_call():
    from cope_dspy.models import ollama

    with pytest.raises(CopeInputError, match="LiteLLM refuses logprobs"):
        Text(probe=False).check_lms(ollama("qwen2.5:1.5b"), None)
    with pytest.raises(CopeInputError, match="Anthropic"):
        Text(probe=False).check_lms(dspy.LM("anthropic/claude-3-5-haiku-latest", api_key="x"), None)


def test_text_signature_and_lm_config():
    task = Text()
    sig = task.signature("small_executor")
    assert list(sig.output_fields) == ["solution"]  # the response is the answer
    assert task.parse("  A response. ", "") == "A response."
    assert task.lm_config("small_executor") == {"logprobs": True}
    assert task.lm_config("large_executor") == {} and task.lm_config("goal_planner") == {}
    assert "one sentence" in task.signature("goal_planner").instructions
