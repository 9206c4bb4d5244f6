"""Benchmark harness for cope-dspy: loaders, metrics, baselines and the runner (see evals/data/ for data)."""
