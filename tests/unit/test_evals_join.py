"""Joining two result folders of one benchmark recorded on disjoint problems (`python -m evals.join`)."""

import json

import pytest
from test_evals_runner import examples, make

from evals.benchmarks import get, record_all
from evals.join import join, main
from evals.report import write_report

SETTINGS = {"benchmark": "gsm8k", "split": "test", "small": "scripted/small", "large": "scripted/large", "n": 4,
            "max_tokens": 768, "role_max_tokens": {}, "acceptance": None, "formats": {}, "prices": {}}


def folder(tmp_path, name, ids, **settings):
    path = tmp_path / name
    path.mkdir()
    cascade, _, _ = make(path)
    picked = [ex for ex in examples(4) if ex.id in ids]
    record_all(cascade, picked, get("gsm8k").correct, path / "records.jsonl", progress=False)
    (path / "run.json").write_text(json.dumps({**SETTINGS, **settings, "command": f"test {name}"}))
    return path


def ids(path):
    return [json.loads(line)["id"] for line in (path / "records.jsonl").read_text().splitlines()]


def test_join_adds_only_the_records_the_destination_lacks_and_the_table_covers_both(tmp_path, capsys):
    first = folder(tmp_path, "first", {"p0", "p1"})
    second = folder(tmp_path, "second", {"p1", "p2", "p3"})
    before = (second / "records.jsonl").read_text()
    assert main([str(second), str(first)]) == 0
    assert "2 records" in capsys.readouterr().out
    assert sorted(ids(first)) == ["p0", "p1", "p2", "p3"]
    assert (second / "records.jsonl").read_text() == before  # the source is left as it is
    assert join(second, first) == 0  # joining again adds nothing
    write_report(first, examples(4))
    assert json.loads((first / "summary.json").read_text())["problems"] == 4


def test_folders_recorded_with_other_settings_do_not_join(tmp_path):
    first = folder(tmp_path, "first", {"p0"})
    other = folder(tmp_path, "other", {"p1"}, max_tokens=320)
    with pytest.raises(SystemExit, match=r"made with max_tokens=768; this run asks max_tokens=320"):
        join(other, first)
    assert ids(first) == ["p0"]
    with pytest.raises(SystemExit, match="not a result folder"):
        join(tmp_path / "missing", first)


def test_judgments_the_destination_lacks_are_joined_too(tmp_path):
    first = folder(tmp_path, "first", {"p0"})
    second = folder(tmp_path, "second", {"p1"})
    (first / "judgments.jsonl").write_text(json.dumps({"key": "k0", "verdict": "a"}) + "\n")
    (second / "judgments.jsonl").write_text("".join(json.dumps({"key": k, "verdict": "b"}) + "\n" for k in ("k0", "k1")))
    join(second, first)
    joined = [json.loads(line) for line in (first / "judgments.jsonl").read_text().splitlines()]
    assert joined == [{"key": "k0", "verdict": "a"}, {"key": "k1", "verdict": "b"}]  # DST's own kept, SRC's new added
    join(second, first)
    assert len((first / "judgments.jsonl").read_text().splitlines()) == 2  # again: nothing new
