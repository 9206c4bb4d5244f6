"""`evals.agent_plans`: which recorded COPE plans name an object or place the step can act on."""

import json

import pytest

from evals.agent_plans import main, plan_counts, targets

VALID = ["look around", "inventory", "take notebook", "put notebook in book case", "open wastepaper basket"]


def step(*plans):
    return {"valid_actions": VALID, "trace": [{"candidates": [{"plans": p} for p in plans]}]}


def episode(method, seed, steps):
    return {"id": f"{method}/{seed}", "method": method, "seed": seed, "steps": steps}


def test_targets_are_the_arguments_of_the_valid_actions():
    assert targets(VALID) == {"notebook", "book case", "wastepaper basket"}


def test_a_goal_that_restates_the_task_names_no_target_and_a_shared_guideline_counts_once():
    steps = [
        step({"goal": "Pick up objects, then place them in their usual locations."},
             {"goal": "Put the Notebook on the shelf."}),
        step({"guideline": "Open the wastepaper basket first."}, {"guideline": "Open the wastepaper basket first."},
             {"guideline": "Explore the room."}),
    ]
    counts = plan_counts([episode("COPE", 1, steps)])
    assert counts == {"goal": {"plans": 2, "name_a_target": 1}, "guideline": {"plans": 2, "name_a_target": 1}}


def test_the_command_reads_only_seeds_every_method_played(tmp_path, capsys):
    named = step({"goal": "take the notebook"})
    records = [episode("COPE", 1, [named]), episode("large alone", 1, []),
               episode("COPE", 2, [named, named])]  # seed 2: large alone has not played it
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "run.json").write_text(json.dumps({"methods": ["large alone", "COPE"]}))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "in 1 episodes" in out and "goals (small model, one per sample): 1, of which 1 (100%)" in out
    (tmp_path / "run.json").write_text(json.dumps({"methods": ["large alone"]}))
    with pytest.raises(SystemExit, match="holds no COPE episodes"):
        main([str(tmp_path)])
