"""Member deletion (right to be forgotten): ``lantern-batch forget`` and the tombstones that keep
forgotten members out of later runs.

* :mod:`~lantern_batch.forget.config` — the job's config (light: pydantic only).
* :mod:`~lantern_batch.forget.tombstones` — keyed member hashes: writing, loading, and the
  filters precompute and synthesize apply to their inputs.
* :mod:`~lantern_batch.forget.job` — ``lantern-batch forget``: removes the members' rows from
  every output and writes the deletion report.
"""
