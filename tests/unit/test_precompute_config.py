"""Precompute config, plan and the checks that run before any work (no Ray)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.cli import main
from lantern_batch.config import ConfigError, load_config
from lantern_batch.precompute.config import PrecomputeConfig
from lantern_batch.precompute.job import find_previous, input_files, new_run_id, partition_dirs


def test_defaults_are_the_demo_and_shortcuts_map_to_keys():
    cfg = PrecomputeConfig()
    assert cfg.out == "runs/demo" and cfg.classifier.ref == "runs/demo/models/classifier"
    assert cfg.quality_gate.canary is None and cfg.incremental
    assert set(PrecomputeConfig.SHORTCUTS) >= {"--members", "--jobs", "--pairs", "--out", "--classifier",
                                               "--explainer", "--ds"}
    cfg = load_config(PrecomputeConfig, None, ["ds=2026-11-24", "explainer.policy.top_n_per_member=3",
                                               "classifier.ref=bundled:minilm"])
    assert cfg.ds == "2026-11-24" and cfg.resolved_ds() == "2026-11-24"
    assert cfg.explainer.policy.top_n_per_member == 3


@pytest.mark.parametrize("override", ["ds=2026-13-01", "ds=yesterday", "explainer.policy.labels=[Great]",
                                      "explainer.policy.sample_rate=1.5", "classifier.dtype=fp8",
                                      "join.strategy=magic", "classifer.ref=x"])
def test_bad_values_fail_with_a_config_error(override):
    with pytest.raises(ConfigError):
        load_config(PrecomputeConfig, None, [override])


def test_plan_names_the_steps():
    plan = PrecomputeConfig(ds="2026-11-24").plan()
    text = "\n".join(plan)
    assert "ds=2026-11-24" in text and "quality gate: skipped" in text and "vLLM" in text
    gated = load_config(PrecomputeConfig, None, ["quality_gate.canary=s3://b/canary", "explainer.enabled=false"])
    text = "\n".join(gated.plan())
    assert "score canary s3://b/canary" in text and "vLLM" not in text


def test_missing_required_column_fails_before_any_work(tiny_world, tmp_path, capsys):
    import ray

    io.write_table(pa.table({"member_id": ["m1"], "query": [None]}), str(tmp_path / "pairs"))
    ray_was_up = ray.is_initialized()  # an integration test earlier in the session may have started it
    code = main(["precompute", "--members", str(tiny_world / "members"), "--jobs", str(tiny_world / "jobs"),
                 "--pairs", str(tmp_path / "pairs"), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "table 'pairs'" in err and "'job_id'" in err and "is missing" in err
    assert ray.is_initialized() == ray_was_up  # the check ran before Ray was started
    assert not (tmp_path / "out").exists()


def test_input_files_checks_the_footer_and_needs_files(tiny_world, tmp_path):
    files = input_files(str(tiny_world / "members"), "members")
    assert files and all(f.endswith(".parquet") for f in files)
    with pytest.raises(Exception, match="no Parquet files"):
        input_files(str(tmp_path / "nothing"), "jobs")
    io.write_table(pa.table({"job_id": ["j"], "title": ["t"], "description": [1]}), str(tmp_path / "jobs"))
    with pytest.raises(Exception, match="'description'"):
        input_files(str(tmp_path / "jobs"), "jobs")


def test_previous_partition_is_the_newest_published_up_to_ds(tmp_path):
    base = str(tmp_path / "scores")
    for ds, publish in (("2026-11-20", True), ("2026-11-22", True), ("2026-11-23", False), ("2026-11-25", True)):
        d = io.join(base, f"ds={ds}")
        run = new_run_id()
        f = io.write_table(pa.table({"x": [1]}), d, basename=f"part-{run}-0.parquet")
        if publish:
            io.publish_partition(d, [f], {"run_id": run, "ds": ds})
    assert partition_dirs(base) == ["2026-11-25", "2026-11-23", "2026-11-22", "2026-11-20"]
    prev = find_previous(base, "2026-11-24")
    assert prev is not None and prev[0] == "2026-11-22" and len(prev[2]) == 1
    assert find_previous(base, "2026-11-25")[0] == "2026-11-25"  # a rerun reuses its own ds
    assert find_previous(base, "2026-11-19") is None
    assert find_previous(str(tmp_path / "none"), "2026-11-24") is None
