"""Generate a synthetic world (members, jobs, pairs, seed labels, apply log) on a Ray cluster.

Runs ``lantern-batch generate`` with the same arguments, from a checkout uploaded as the job's
working directory (the package need not be installed on the cluster):

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/generate.py --config configs/demo_generate.yaml \
        --set out=s3://my-bucket/lantern/world --set num_pairs=2000000

Paths in the config are read on the cluster: use ``s3://`` or absolute paths there (a relative
path lands inside the job's temporary working directory). Exit code: 0 done, 2 bad config.
"""

import sys
from pathlib import Path

# `python jobs/generate.py` puts jobs/ on sys.path, not the checkout root that holds
# lantern_batch/; the uploaded working directory wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lantern_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
