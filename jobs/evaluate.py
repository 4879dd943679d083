"""Evaluate the students against the teacher and write the HTML report, on a Ray cluster.

Runs ``lantern-batch evaluate`` with the same arguments, from a checkout uploaded as the job's
working directory (the package need not be installed on the cluster):

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/evaluate.py --config configs/prod_evaluate.yaml

Output: ``OUT/index.html`` (self-contained, plots embedded) and ``OUT/metrics.json``.
Exit code: 0 done, 2 bad config, 1 other failure.
"""

import sys
from pathlib import Path

# `python jobs/evaluate.py` puts jobs/ on sys.path, not the checkout root that holds
# lantern_batch/; the uploaded working directory wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lantern_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
