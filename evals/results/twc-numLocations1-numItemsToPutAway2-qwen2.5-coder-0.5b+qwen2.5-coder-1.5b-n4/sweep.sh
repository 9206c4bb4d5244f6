#!/usr/bin/env bash
# Difficulty sweep for twc: large alone, the first 3 test seeds per setting, at most 12 actions an episode.
cd /work/wt/i17
export PYTHONPATH=$PWD LITELLM_LOCAL_MODEL_COST_MAP=True HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
for p in "$@"; do
  echo "== $p $(date)"
  nice -n 10 python -m evals.run twc --params "$p" --methods "large alone" --limit 3 --max-steps 12 --history 3 --concurrency 2
done
echo "== done $(date)"
