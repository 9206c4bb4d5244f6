"""Prompt variants calibrated with the thresholds: recorded once per variant, replayed, chosen by one study."""

import random

import dspy
import pytest
from fakes import ScriptedLM, math_model

from cope_dspy import Cascade, Math, Prices
from cope_dspy.answers import math_equal
from cope_dspy.calibrate import Records, calibrate, record, replay, within_points_of_large
from evals.report import FOLDS, cross_fitted

PRICES = Prices({"scripted/small": (0.5, 1.0), "scripted/large": (5.0, 15.0)})


def synthetic(variants: dict[str, float], size: int = 60, n: int = 4, seed: int = 0) -> Records:
    """Records of several variants on the same problems. A variant's number is how often its small samples
    are right; wrong ones agree on "3", so a weak variant's stage 1 is often confidently wrong. The large
    model is right on every problem in every variant: only the small model's prompt differs."""
    items = []
    for variant, p_right in variants.items():
        rng = random.Random(seed)

        def cand(i, p, usd, calls, rng=rng):
            answer = "7" if rng.random() < p else "3"
            return {"index": i, "solution": "", "answer": answer, "plans": {}, "error": None, "score": None,
                    "usage": {"calls": calls, "usd": usd}, "correct": float(answer == "7")}

        for e in range(size):
            p = min(1.0, p_right * (0.5 + rng.random()))
            trace = [
                {"kind": "vote", "stage": 1, "candidates": [cand(i, p, 0.0001, 2) for i in range(n)]},
                {"kind": "guideline", "stage": 2, "guideline": "G", "usage": {"calls": 1, "usd": 0.001}},
                {"kind": "vote", "stage": 2, "candidates": [cand(i, min(1.0, p + 0.2), 0.0001, 1) for i in range(n)]},
                {"kind": "final", "stage": 3, "candidates": [cand(0, 1.0, 0.004, 1)]},
            ]
            policy = {"n": n, "stages": [1, 2, 3], "task": "math", "variant": variant}
            items.append({"format": "cope-dspy/records/1", "id": f"e{e}", "variant": variant, "policy": policy,
                          "inputs": {}, "trace": trace})
    return Records(items)


@pytest.mark.parametrize("sampler, points", [("grid", 1.0), ("tpe", 5.0)])
def test_one_study_picks_the_known_best_variant(sampler, points):
    records = synthetic({"weak": 0.3, "strong": 0.9, "middling": 0.6})
    cal = calibrate(records, sampler=sampler, n_trials=150, storage="memory", seed=0,
                    constraint=within_points_of_large(points))
    assert cal.constraint_met and cal.params["variant"] == "strong"
    # the choice is the cheapest feasible setting of any variant: no variant alone does better
    for v in ("weak", "middling"):
        alone = calibrate(records, sampler="grid", storage="memory", variants=[v],
                          constraint=within_points_of_large(points))
        assert alone.result.usd_per_1k > cal.result.usd_per_1k or alone.result.accuracy < cal.result.accuracy


def test_cross_fitting_chooses_the_variant_per_fold_and_scores_it_held_out():
    records = synthetic({"weak": 0.3, "strong": 0.9})
    rows, exits, chosen = cross_fitted(records, Math().same)
    assert len(chosen) == FOLDS and {c["variant"] for c in chosen} == {"strong"}
    strong_rows, _, strong_chosen = cross_fitted(Records([i for i in records if i["variant"] == "strong"]),
                                                 Math().same)
    untimed = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731 - NaN != NaN
    assert untimed(rows) == untimed(strong_rows) and sum(exits.values()) == 60
    assert all("variant" not in c for c in strong_chosen)  # one variant: the settings read as before


def test_variants_must_cover_the_same_problems():
    records = synthetic({"a": 0.5, "b": 0.5})
    partial = Records([i for i in records if i["variant"] == "a" or i["id"] != "e0"])
    with pytest.raises(ValueError, match="same problems"):
        cross_fitted(partial, Math().same)


def test_format_variants_are_recorded_and_replayed_as_live(tmp_path):
    """The chat and the plain format recorded as two variants of one file; each replays its own live run."""
    questions = ["q-agree", "q-split", "q-scattered"]
    script = {"q-agree": ["7"] * 4, "q-split": ["7", "7", "7", "1"], "q-scattered": ["1", "2", "3", "4"]}

    def plain_small():
        def respond(call):
            if "math teacher" in call.system:
                return f"Find the count #{call.rollout_id}"
            question = call.user.split("\n\n")[0]
            return f"Working.\n\\boxed{{{script[question][call.rollout_id]}}}"

        return ScriptedLM("scripted/small", respond)

    large = math_model("scripted/large", lambda call: "7")
    chat_small = math_model("scripted/small", lambda call: script[call.question][call.rollout_id])
    devset = [dspy.Example(question=q, answer="7").with_inputs("question") for q in questions]

    def metric(example, pred):
        return pred.answer is not None and math_equal(pred.answer, example.answer)

    cascades = {
        "chat": Cascade(small=chat_small.lm, large=large.lm, task=Math(), n=4, prices=PRICES),
        "plain": Cascade(small=plain_small().lm, large=large.lm, task=Math(), n=4, prices=PRICES,
                         formats={"goal_planner": "plain", "small_executor": "plain"}),
    }
    path = tmp_path / "variants.jsonl"
    for name, cascade in cascades.items():
        record(cascade, devset, metric, path, variant=name, progress=False)
    records = Records.load(path)
    assert records.variants == ["chat", "plain"]
    for name, cascade in cascades.items():
        result = replay(records, 0.75, 0.5, variant=name)
        live = [cascade(question=q) for q in questions]
        assert [r["stage"] for r in result.per_example] == [p.stage for p in live] == [1, 1, 3]
        assert [r["answer"] for r in result.per_example] == [p.answer for p in live]


# ---------------------------------------------------------------- code: the variant chosen with n and the stages


def code_records(p_pass: float, size: int = 30, seed: int = 0) -> list[dict]:
    """Code records of one variant: each small sample passes its user tests (and is right) with probability
    `p_pass`; the guideline, stage 3 and the large model alone cost 1.0 and are right. A strong variant settles
    more problems at stage 1, for free."""
    from test_code_acceptance import cand, rec

    rng = random.Random(seed)
    out = []
    for e in range(size):
        stage1 = [cand(i, ok, ok) for i in range(4) for ok in [rng.random() < p_pass]]
        stage2 = [cand(i, ok, ok) for i in range(4) for ok in [rng.random() < p_pass]]
        r = rec(stage1, stage2, final_correct=True)
        r["id"] = f"e{e}"
        out.append(r)
    return out


def test_a_code_study_chooses_the_variant_that_settles_more_problems_for_free():
    from evals.report import code_baseline_rows, code_cross_fitted

    variants = {"weak": code_records(0.1), "strong": code_records(0.7)}
    large = code_baseline_rows(variants["weak"], "user")["large alone"]
    rows, exits, chosen = code_cross_fitted(variants, 4, large)
    assert len(chosen) == FOLDS and {c["variant"] for c in chosen} == {"strong"}
    strong_rows, _, strong_chosen = code_cross_fitted(variants["strong"], 4, large)
    assert rows == strong_rows and all("variant" not in c for c in strong_chosen)
    assert sum(exits.values()) == 30 and all(
        r["correct"] for r in rows
    )  # held to large alone: every one right
    with pytest.raises(ValueError, match="same problems in the same order"):
        code_cross_fitted({"weak": variants["weak"], "strong": variants["strong"][::-1]}, 4, large)


def test_a_code_study_offers_each_variant_the_n_its_recording_holds():
    from test_code_acceptance import cand, rec

    from evals.report import code_baseline_rows, code_cross_fitted

    def records(n, first_pass):  # stage 1's samples pass from index `first_pass` on (never when it is >= n)
        out = []
        for e in range(30):
            stage1 = [cand(i, i >= first_pass, i >= first_pass) for i in range(n)]
            r = rec(stage1, [cand(i, False, False) for i in range(n)], final_correct=True)
            r["id"] = f"e{e}"
            out.append(r)
        return out

    variants = {"n4": records(4, 4), "n8": records(8, 5)}  # only the sixth sample on passes
    large = code_baseline_rows(variants["n4"], "user")["large alone"]
    _, _, n4_alone = code_cross_fitted(variants["n4"], 4, large)
    assert all(c["n"] <= 4 for c in n4_alone)  # an n = 4 recording is never replayed at n = 6 or 8
    rows, exits, chosen = code_cross_fitted(variants, {"n4": 4, "n8": 8}, large)
    assert {(c["variant"], c["n"]) for c in chosen} == {("n8", 6)}  # the cheapest n that reaches a pass
    assert exits == {1: 30, 2: 0, 3: 0} and all(r["correct"] for r in rows)
    _, _, capped = code_cross_fitted(variants, 4, large)  # one number caps every variant: no free exit left
    assert all(c["n"] <= 4 for c in capped)


def test_calibrate_variants_runs_a_code_study_from_two_folders(tmp_path, capsys):
    import json

    from evals.calibrate_variants import main

    folders = []
    for label, p_pass in (("weak", 0.1), ("strong", 0.7)):
        folder = tmp_path / label
        folder.mkdir()
        run = {"benchmark": "humaneval", "n": 4, "acceptance": "user", "max_tokens": 768}
        if label == "strong":  # recorded with --stage1-from: its records hold the weak folder's stage-1 votes
            run["stage1_from"] = str(tmp_path / "weak")
        (folder / "run.json").write_text(json.dumps(run))
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in code_records(p_pass)))
        folders.append(f"{label}={folder}")
    assert main([*folders, "--stage3", "choose", "--out", str(tmp_path / "out")]) == 0
    out = json.loads((tmp_path / "out" / "variants.json").read_text())
    assert out["benchmark"] == "humaneval" and out["acceptance"] == "user" and out["problems"] == 30
    assert out["variants"]["weak"]["n"] == 4 and "| n recorded |" in (tmp_path / "out" / "variants.md").read_text()
    assert {c["variant"] for c in out["joint"]["chosen"]} == {"strong"}
    assert all("stage3_plans" in c for c in out["joint"]["chosen"])
    strong, weak = out["variants"]["strong"]["cross_fitted"], out["variants"]["weak"]["cross_fitted"]
    assert (
        strong["usd_per_1k"] < weak["usd_per_1k"]
        and out["joint"]["cross_fitted"]["usd_per_1k"] == strong["usd_per_1k"]
    )
    # each record: 4 stage-1 samples, a guideline, 4 stage-2 samples, a final answer; a folder whose stage 1
    # came from another counts stages 2-3 only, as the weak folder paid its stage 1
    assert out["variants"]["weak"]["recording"]["lm_calls"] == 30 * 10
    assert out["variants"]["strong"]["recording"]["lm_calls"] == 30 * 6
    md = (tmp_path / "out" / "variants.md").read_text()
    assert f"180, 180 (stages 2-3 only: stage 1 is {tmp_path / 'weak'}'s)" in md
    assert "| method | weak | strong |" in md and md.count("| COPE |") == 1  # one row, a cell per variant
    assert [m["method"] for m in out["variants"]["weak"]["methods"]][:3] == [
        "small single", "small n, the one its user tests pick", "large alone"]
    capsys.readouterr()
    (tmp_path / "strong" / "run.json").write_text(
        json.dumps({"benchmark": "humaneval", "n": 4, "acceptance": "grading"})
    )
    with pytest.raises(SystemExit, match="different rules"):
        main([*folders, "--out", str(tmp_path / "out2")])
