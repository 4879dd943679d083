"""Fusion of several teachers' soft labels and the agreement report."""

import numpy as np
import pyarrow as pa

from lantern_batch.teacher.fusion import FUSED_SCHEMA, agreement_report, fuse_table


def _labels(rows):
    keys = ["pair_id", "member_id", "job_id", "teacher", "prompt_version", "fit_label", "p_high", "p_medium", "p_low"]
    return pa.Table.from_pylist([dict(zip(keys, r, strict=False)) for r in rows])


ROWS = [
    ("p1", "m1", "j1", "a", "v1", "High", 0.8, 0.1, 0.1),
    ("p1", "m1", "j1", "b", "v1", "Medium", 0.2, 0.7, 0.1),
    ("p2", "m2", "j1", "a", "v1", "Low", 0.1, 0.2, 0.7),
    ("p2", "m2", "j1", "b", "v1", "Low", 0.0, 0.1, 0.9),
    ("p3", "m3", "j2", "a", "v1", "High", 0.9, 0.05, 0.05),  # only teacher a
]


def test_weighted_mean_and_labels():
    fused, partial = fuse_table(_labels(ROWS), {"a": 3.0, "b": 1.0})
    assert fused.schema.equals(FUSED_SCHEMA, check_metadata=False)
    rows = {r["pair_id"]: r for r in fused.to_pylist()}
    np.testing.assert_allclose([rows["p1"]["p_high"], rows["p1"]["p_medium"]], [(3 * 0.8 + 0.2) / 4, (3 * 0.1 + 0.7) / 4], rtol=1e-6)
    assert rows["p1"]["fit_label"] == "High" and not rows["p1"]["agree"]
    assert rows["p2"]["agree"] and rows["p3"]["n_teachers"] == 1 and rows["p3"]["teachers"] == ["a"]
    c = partial["pairs"]["a|b"]
    assert c["common"] == 2 and c["same"] == 1
    assert c["confusion"][0][1] == 1 and c["confusion"][2][2] == 1


def test_temperature_and_unknown_teachers():
    sharp, _ = fuse_table(_labels(ROWS), {"a": 1.0}, temperature=0.5)
    flat, _ = fuse_table(_labels(ROWS), {"a": 1.0}, temperature=1.0)
    assert sharp.column("p_high")[0].as_py() > flat.column("p_high")[0].as_py()
    assert flat.num_rows == 3  # teacher b ignored: no weight


def test_agreement_report_sums_buckets_and_kappa():
    _, p1 = fuse_table(_labels(ROWS[:2]), {"a": 1, "b": 1})
    _, p2 = fuse_table(_labels(ROWS[2:]), {"a": 1, "b": 1})
    report = agreement_report([p1, p2], {"a": 1, "b": 1})
    pair = report["pairwise"]["a|b"]
    assert pair["common_pairs"] == 2 and pair["agreement"] == 0.5
    assert -1 <= pair["cohen_kappa"] <= 1
    assert np.array(pair["confusion"]).sum() == 2
