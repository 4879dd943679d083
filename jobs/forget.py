"""Member deletion on a Ray cluster (right to be forgotten): remove every row of the listed
members from the published scores and errors, teacher labels, fused labels, the black-box
cache, distillation examples and curation sheets; tombstone them so later runs keep them out.

Runs ``lantern-batch forget`` with the same arguments, from a checkout uploaded as the job's
working directory (the package need not be installed on the cluster). The tombstone key comes
from the job's environment, never from the config:

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env-json '{"env_vars": {"LANTERN_FORGET_KEY": "..."}}' -- \
        python jobs/forget.py --config configs/prod_forget.yaml \
        --members s3://lantern-prod/forget/requests/2026-11-24.txt

Output: ``OUT/report-<forget_id>.json`` (counts per table, no ids) and the tombstones
(``_tombstones/members-<forget_id>.parquet``). Exit code: 0 complete, 1 incomplete (a
precompute or synthesize run held a lock: rerun) or other failure, 2 bad input or config.
"""

import sys
from pathlib import Path

# `python jobs/forget.py` puts jobs/ on sys.path, not the checkout root that holds
# lantern_batch/; the uploaded working directory wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lantern_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["forget", *sys.argv[1:]]))
