"""Teacher synthesis on a Ray cluster: vLLM actors label every pair (D_cls / D_t).

Runs ``lantern-batch synthesize`` with the same arguments, from a checkout uploaded as the
job's working directory (the package need not be installed on the cluster):

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/synthesize.py --config configs/prod_synthesize.yaml \
        --set out=s3://my-bucket/lantern/synth/2026-11-24

Output: ``OUT/labels/teacher=NAME/``, ``OUT/fused/`` (several teachers), ``OUT/errors/``.
Exit code: 0 done, 2 bad input or config, 1 other failure.
"""

import sys
from pathlib import Path

# `python jobs/synthesize.py` puts jobs/ on sys.path, not the checkout root that holds
# lantern_batch/; the uploaded working directory wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lantern_batch.cli import main  # noqa: E402

# vLLM spawns its engine process, which re-imports this file: keep the guard.
if __name__ == "__main__":
    sys.exit(main(["synthesize", *sys.argv[1:]]))
