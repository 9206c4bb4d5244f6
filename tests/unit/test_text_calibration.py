"""Calibrating a Text cascade from its records: replay runs the live perplexity ballot on the recorded scores, so
any tau, n and stages give the live run's exits and costs; the study searches tau continuously."""

import dspy
import pytest
from fakes import writer
from fixtures.replay_check import assert_replays_live

from cope_dspy import Cascade, CopeInputError, Prices, Text
from cope_dspy.calibrate import calibrate, record, replay, within_points_of_large

PRICES = Prices({"scripted/small": (0.5, 1.0), "scripted/large": (5.0, 15.0)})  # both > 0: every draw counts

# question -> (stage-1 replies, stage-2 replies, the large model's reply); a reply is (quality, per-token logprob);
# None: the server sent no logprobs, so the sample abstains
SCRIPT = {
    "q-confident": ([("good", -0.05), ("bad", -1.0), ("good", -0.3), ("bad", -2.0)], [("good", -0.1)] * 4, "good"),
    "q-unsure": ([("bad", -1.5), ("good", -1.6), ("bad", -1.4), ("bad", -1.7)],
                 [("bad", -0.9), ("good", -0.2), ("bad", -0.5), ("good", -0.6)], "good"),
    "q-sure-and-wrong": ([("bad", -0.02), ("good", -0.5), ("good", -0.4), ("bad", -0.3)], [("good", -0.1)] * 4, "good"),
    "q-silent": ([("good", None)] * 4, [("bad", -0.7), ("bad", None), ("good", -0.8), ("bad", -0.75)], "bad"),
    "q-late-best": ([("bad", -0.9), ("bad", -0.8), ("good", -0.7), ("good", -0.1)], [("bad", -0.3)] * 4, "good"),
}


def script(call):
    return SCRIPT[next(q for q in SCRIPT if call.question.startswith(q))]  # a call without plans: more text


def replies(call):
    stage1, stage2, _ = script(call)
    quality, _lp = (stage2 if "Guideline:" in call.plans else stage1)[call.rollout_id]
    return f"A {quality} reply to {call.question.split()[0]} @{call.rollout_id}{'/2' if 'Guideline:' in call.plans else ''}."


def logprob(text):
    question = next(q for q in SCRIPT if q in text)
    i = int(text.split("@")[1][0])
    return SCRIPT[question][1 if "/2" in text else 0][i][1]


def make_cascade(**kwargs):
    small = writer("scripted/small", replies, logprob=lambda t: logprob(t) if "@" in t else -0.1)
    large = writer("scripted/large", lambda call: f"The large model's {script(call)[2]} reply.")
    kwargs.setdefault("prices", PRICES)
    kwargs.setdefault("n", 4)
    return Cascade(small=small.lm, large=large.lm, task=Text(), **kwargs), small, large


def devset():
    return [dspy.Example(id=q, question=q).with_inputs("question") for q in SCRIPT]


def judged(example, pred):  # a judge's verdict, here read off the scripted reply
    return 1.0 if pred.answer and " good " in f" {pred.answer} " else 0.0


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "text.jsonl"
    return record(make_cascade()[0], devset(), judged, path, progress=False, baselines=True)


@pytest.mark.parametrize("tau1, tau2, n, stages, early_stop", [
    (0.75, 0.5, 4, (1, 2, 3), True),
    (0.9, 0.7, 4, (1, 2, 3), True),
    (0.5, 0.5, 2, (1, 2, 3), True),
    (1.0, 0.6, 4, (1, 2, 3), True),   # stage 1 never accepts: one sample
    (1.0, 0.6, 4, (1, 2, 3), False),  # ... unless every sample is drawn
    (0.0, 0.5, 3, (1, 2, 3), True),
    (0.8, 0.8, 4, (1, 3), True),
    (0.8, 0.8, 4, (2, 3), True),
    (0.8, 0.8, 4, (1, 2), True),
])
def test_replay_equals_live(recorded, tau1, tau2, n, stages, early_stop):
    assert recorded.policies["default"]["consensus"] == "perplexity"
    cascade, _, _ = make_cascade(tau1=tau1, tau2=tau2, n=n, stages=stages, early_stop=early_stop)
    live = {ex.id: cascade(**ex.inputs()) for ex in devset()}
    assert_replays_live(replay(recorded, tau1, tau2, n, stages, early_stop), live, judged, devset())


def test_the_study_searches_tau_continuously_and_its_choice_runs_live(recorded):
    with pytest.raises(CopeInputError, match="confidence .1/perplexity. is continuous"):
        calibrate(recorded, storage="memory", sampler="grid")
    cal = calibrate(recorded, storage="memory", n_trials=40, constraint=within_points_of_large(20))
    bar = cal.large_alone["accuracy"] - 0.2
    assert cal.constraint_met and cal.result.accuracy >= bar - 1e-12
    assert cal.result.usd_per_1k == min(t["usd_per_1k"] for t in cal.trials if t["accuracy"] >= bar - 1e-12)
    assert len({round(t["tau1"], 6) for t in cal.trials}) > 20  # tau searched as a number, not a grid
    cascade, _, _ = make_cascade()
    cal.apply(cascade)
    preds = [cascade(**ex.inputs()) for ex in devset()]
    assert sum(p.cost.usd for p in preds) == pytest.approx(cal.result.usd_total, rel=1e-9, abs=1e-15)
    assert sum(judged(ex, p) for ex, p in zip(devset(), preds, strict=True)) / len(preds) == pytest.approx(
        cal.result.accuracy)
