"""The whole pipeline, every stage in order, as one Ray job (``lantern-batch demo`` semantics).

generate → teacher SFT → teacher synthesis → distil classifier and explainer → precompute →
evaluate, with the stages configured by one pipeline config (defaults: the local demo):

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/pipeline.py --config configs/demo_pipeline.yaml

Each stage can also be submitted on its own (``jobs/<stage>.py``), which is what a nightly
schedule does with precompute. Exit code: the first failing stage's, else 0.
"""

import sys
from pathlib import Path

# `python jobs/pipeline.py` puts jobs/ on sys.path, not the checkout root that holds
# lantern_batch/; the uploaded working directory wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lantern_batch.cli import main  # noqa: E402

# Synthesis and precompute start vLLM, which spawns its engine process: keep the guard.
if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
