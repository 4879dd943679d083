"""Nightly precompute on a Ray cluster: score every pair, publish partitioned Parquet.

Runs ``lantern-batch precompute`` with the same arguments, from a checkout uploaded as the
job's working directory (the package need not be installed on the cluster):

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/precompute.py --config configs/prod_precompute.yaml --set ds=2026-11-24

Output: ``OUTPUT/scores/ds=…/`` (data files, ``_manifest-<run_id>.json``, then ``_SUCCESS``
naming the run),
``OUTPUT/errors/ds=…/`` and ``OUTPUT/scores/_LATEST``. Exit code: 0 published, 3 blocked by
the quality gate (nothing published), 2 bad input or config, 1 other failure.
"""

import sys
from pathlib import Path

# `python jobs/precompute.py` puts jobs/ on sys.path, not the checkout root that holds
# lantern_batch/; the uploaded working directory wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lantern_batch.cli import main  # noqa: E402

# The explainer stage runs vLLM, which spawns its engine process: keep the guard.
if __name__ == "__main__":
    sys.exit(main(["precompute", *sys.argv[1:]]))
