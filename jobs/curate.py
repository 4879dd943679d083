"""Human review of teacher labels on a Ray cluster: export a review sheet, or import the
reviewers' decisions into D_seed.

Runs ``lantern-batch curate`` with the same arguments, from a checkout uploaded as the job's
working directory (the package need not be installed on the cluster):

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/curate.py export --config configs/demo_curate_export.yaml \
        --set out=s3://my-bucket/lantern/curation/2026-12-01

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/curate.py import --config configs/demo_curate_import.yaml

Output: export writes the sheet (CSV, spreadsheet formulas neutralised); import writes D_seed.
Exit code: 0 done, 2 bad input or config, 1 other failure.
"""

import sys
from pathlib import Path

# `python jobs/curate.py` puts jobs/ on sys.path, not the checkout root that holds
# lantern_batch/; the uploaded working directory wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lantern_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["curate", *sys.argv[1:]]))
