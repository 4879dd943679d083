"""Distillation on a Ray cluster (Ray Train): teacher SFT, classifier or explainer student.

The stage comes first, then the usual ``--config`` / ``--set`` arguments; it runs
``lantern-batch distill STAGE`` from a checkout uploaded as the job's working directory:

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/distill.py classifier --config configs/prod_distill_classifier.yaml

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/distill.py explainer --config configs/prod_distill_explainer.yaml

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/distill.py teacher-sft --config configs/prod_distill_teacher_sft.yaml

Stages: ``teacher-sft`` (fine-tune T2 on D_seed), ``classifier``, ``explainer``.
Exit code: 0 done, 2 bad input or config, 1 other failure.
"""

import sys
from pathlib import Path

# `python jobs/distill.py` puts jobs/ on sys.path, not the checkout root that holds
# lantern_batch/; the uploaded working directory wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lantern_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
