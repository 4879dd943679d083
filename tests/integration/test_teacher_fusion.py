"""Fusion's output is used only when complete and current: the marker is withdrawn before the
table changes and written last, and a single-teacher run withdraws an earlier fusion."""

from types import SimpleNamespace

import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.distill.data import resolve_teacher_labels
from lantern_batch.errors import InputError
from lantern_batch.teacher import fusion, store

pytestmark = pytest.mark.integration


def _write_labels(out, teacher, rows):
    table = pa.Table.from_pylist([
        {"pair_id": f"{i:x}{pid}", "member_id": f"m{i}", "job_id": "j1", "teacher": teacher, "prompt_version": "v1",
         "fit_label": label, "p_high": ph, "p_medium": pm, "p_low": 1 - ph - pm}
        for i, (pid, label, ph, pm) in enumerate(rows)])
    io.write_table(table, store.labels_dir(str(out), teacher), basename="part-0.parquet")


def _cfg(out, names):
    return SimpleNamespace(out=str(out), fusion=SimpleNamespace(temperature=1.0),
                           teachers=[SimpleNamespace(name=n, prompt_version="v1", weight=1.0) for n in names])


def test_a_crash_mid_fusion_leaves_no_fused_table_in_use(ray_local, tmp_path, monkeypatch):
    rows = [("p", "High", 0.8, 0.1), ("q", "Low", 0.1, 0.1), ("r", "Medium", 0.2, 0.6)]
    _write_labels(tmp_path, "a", rows)
    _write_labels(tmp_path, "b", rows)
    summary = fusion.fuse_and_report(_cfg(tmp_path, ["a", "b"]))
    assert summary["fused_rows"] == 3
    assert store.fused_marker(str(tmp_path))["teachers"][1]["name"] == "b"
    assert resolve_teacher_labels(str(tmp_path)).endswith("fused")

    real = fusion.fuse_bucket

    def crash_after_writing_bucket_2(out, teachers, temperature, bucket):
        partial = real(out, teachers, temperature, bucket)
        if bucket == "2":
            raise OSError("node lost")
        return partial

    monkeypatch.setattr(fusion, "fuse_bucket", crash_after_writing_bucket_2)
    with pytest.raises(Exception, match="node lost"):
        fusion.fuse_and_report(_cfg(tmp_path, ["a", "b"]))
    assert store.fused_marker(str(tmp_path)) is None
    assert io.list_parquet_files(store.fused_dir(str(tmp_path)))  # bucket 2 was rewritten...
    with pytest.raises(InputError, match="_SUCCESS"):  # ...but nobody reads it
        resolve_teacher_labels(str(tmp_path))

    # The teacher set shrank to one: the fused table is withdrawn for good.
    store.invalidate_fused(str(tmp_path))
    assert not io.exists(store.fused_dir(str(tmp_path)))
    assert resolve_teacher_labels(str(tmp_path), teacher="a").endswith("teacher=a")
