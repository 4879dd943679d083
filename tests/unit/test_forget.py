"""``lantern-batch forget`` on local disk: outputs built with pyarrow (tests/fixtures/forget.py),
forgotten, then checked file by file. No Ray, no vLLM, no training."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pytest

from lantern_batch import io
from lantern_batch.cli import main
from lantern_batch.errors import InputError
from lantern_batch.forget import tombstones as tb
from lantern_batch.forget.config import ForgetConfig
from lantern_batch.forget.job import read_member_ids, run
from lantern_batch.teacher import store
from tests.fixtures.forget import (
    FORGET,
    KEY,
    all_files,
    assert_nothing_left,
    build_outputs,
    kept,
    sheet_csv,
    snapshot,
)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(tb.KEY_ENV, KEY)
    return KEY.encode()


def _config(paths: dict[str, str], members: str, out: str, **kw) -> ForgetConfig:
    return ForgetConfig(members=members, out=out, precompute=[paths["precompute"]],
                        synthesize=[paths["synthesize"]], distill=[paths["distill"]],
                        curation=[paths["curation"]], tables=[paths["tables"]], reports=[paths["reports"]],
                        gc_grace_s=0, **kw)


def _request(tmp_path, ids=FORGET) -> str:
    path = tmp_path / "request" / "members.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([ids[0], "", f"  {ids[1]}  ", ids[0], "mem-never-seen"]) + "\n")
    return str(path)


def _report(out: str) -> dict:
    (name,) = [n for n in io.list_dir(out) if n.startswith("report-")]
    return json.loads(io.read_text(io.join(out, name)))


@pytest.mark.parametrize("grace", [0, 0.05], ids=["collect-at-once", "collect-after-grace"])
def test_forget_removes_every_row_and_keeps_the_rest_exactly(tmp_path, key, caplog, grace):
    root = str(tmp_path / "outputs")
    paths = build_outputs(root)
    before = snapshot(paths)
    assert all(any(r.get("member_id") in FORGET for r in rows) for name, rows in before.items() if name != "markers")
    sheet_before = io.read_table(io.join(paths["curation"], "review.parquet"))
    out = io.join(root, "forget")

    caplog.set_level(logging.INFO, logger="lantern_batch")
    assert run(_config(paths, _request(tmp_path), out).model_copy(update={"gc_grace_s": grace})) == 0

    # Nothing of theirs anywhere; everyone else's rows exactly as they were.
    assert_nothing_left(root)
    after = snapshot(paths)
    for name, rows in before.items():
        assert after[name] == kept(rows), name
    # The sheet keeps every other record byte for byte (quotes, newlines, neutralised formulas).
    keep_sheet = sheet_before.filter(pa.array([m not in FORGET for m in sheet_before.column("member_id").to_pylist()]))
    assert io.read_text(io.join(paths["curation"], "review.csv")) == sheet_csv(keep_sheet)

    # Published partitions: a new generation, readable, the replaced one gone, counts updated.
    pre = paths["precompute"]
    for ds, removed, errors_removed in (("2026-11-23", 1, 1), ("2026-11-24", 4, 1)):
        sdir = io.join(pre, "scores", f"ds={ds}")
        man, files = io.published_files(sdir)
        assert man["run_id"].startswith("forget-") and io.live_run_id(sdir) == man["run_id"]
        assert sorted(n for n in io.list_dir(sdir) if n.endswith(".parquet")) == sorted(man["files"])
        assert [n for n in io.list_dir(sdir) if n.startswith("_manifest-")] == [io.generation_manifest_name(man["run_id"])]
        table = io.read_published(sdir)
        c = man["counts"]
        assert c["rows_published"] == table.num_rows and c["rows_forgotten"] == removed
        assert c["errors_forgotten"] == errors_removed and c["conservation_ok"] is True
        assert sum(man["labels"]["counts"].values()) == table.num_rows
        labels = table.column("fit_label").to_pylist()
        assert man["labels"]["counts"] == {lab: labels.count(lab) for lab in ("High", "Medium", "Low")}
        assert man["forget"][-1]["rows_removed"] == removed
        edir = io.join(pre, "errors", f"ds={ds}")
        eman, _ = io.published_files(edir)
        errors = io.read_published(edir)
        assert eman["rows"] == errors.num_rows and eman["rows_forgotten"] == errors_removed
        assert sum(eman["errors_by_reason"].values()) == errors.num_rows
    assert io.read_latest(io.join(pre, "scores")) == "2026-11-24"
    # The file holding one forgotten member only is gone, the clean one carried over unchanged.
    man, _ = io.published_files(io.join(pre, "scores", "ds=2026-11-24"))
    assert len(man["files"]) == 2

    # Synthesis: the all-forgotten batch is gone with its marker; markers still match the data.
    synth = paths["synthesize"]
    assert store.clean_orphans(synth) == []
    totals = store.output_totals(synth, [("t1", "v1"), ("t2", "v1")])
    assert totals["teachers"]["t1"]["labelled"] == 3 and totals["teachers"]["t2"]["labelled"] == 1
    assert store.fused_marker(synth) is not None  # the fused table stays usable
    cache_files = [f for f in all_files(io.join(synth, "cache")) if f.endswith(".json")]
    assert len(cache_files) == 1  # the kept member's entry; the flat-layout entry is gone

    report = _report(out)
    assert report["status"] == "complete" and report["incomplete"] == []
    assert report["members_requested"] == 3 and report["members_found"] == 2
    t = report["tables"]
    assert t["precompute.scores"]["rows_removed"] == 5 and t["precompute.scores"]["generations_published"] == 2
    assert t["precompute.scores"]["stale_files_deleted"] >= 3  # both generations of 11-23, the 11-24 files
    assert t["precompute.errors"]["rows_removed"] == 2
    assert t["synthesize.labels"]["rows_removed"] == 4 and t["synthesize.labels"]["files_deleted"] == 1
    assert t["synthesize.fused"]["rows_removed"] == 1
    assert t["synthesize.errors"]["rows_removed"] == 2  # a teacher error, an input error
    assert t["synthesize.commit_markers"]["rows_removed"] == 5 and t["synthesize.commit_markers"]["files_deleted"] == 1
    assert t["synthesize.blackbox_cache"] == {"entries_deleted": 3, "legacy_entries_deleted": 1}
    assert t["distill"]["rows_removed"] == 3 and t["curation"]["rows_removed"] == 4
    assert t["tables"]["rows_removed"] == 1
    # The report naming a forgotten member is gone; the others stay.
    assert t["reports"] == {"files_deleted": 1}
    assert sorted(f.rsplit("/", 2)[-2] + "/" + f.rsplit("/", 1)[-1] for f in all_files(paths["reports"])) == [
        "ds=2026-11-23/index.html", "ds=2026-11-24/metrics.json"]
    # Tombstones: everywhere a later run looks, keyed hashes of all three requested ids.
    assert len(report["tombstones"]["files"]) == 3
    for d in (io.join(out, "_tombstones"), io.join(pre, "_tombstones"), io.join(synth, "_tombstones")):
        hashes, kids, n = tb.read_tombstones([d])
        assert n == 1 and kids == {tb.key_id(key)}
        assert hashes == {tb.member_hash(key, m) for m in [*FORGET, "mem-never-seen"]}
    # No id in the log either.
    assert caplog.text and not any(m in caplog.text for m in [*FORGET, "mem-never-seen"])

    # Idempotent: a second run finds nothing and republishes nothing.
    assert run(_config(paths, _request(tmp_path), out)) == 0
    assert snapshot(paths) == after
    second = [json.loads(io.read_text(io.join(out, n))) for n in io.list_dir(out) if n.startswith("report-")]
    assert sorted(sum(c.get("rows_removed", 0) for c in r["tables"].values()) for r in second)[0] == 0


def test_a_held_lock_is_skipped_and_reported_and_a_rerun_finishes(tmp_path, key):
    root = str(tmp_path / "outputs")
    paths = build_outputs(root)
    lock = io.PartitionLock(io.join(paths["precompute"], "scores", "_locks", "ds=2026-11-24.lock"),
                            owner="precompute-run", ttl_s=900).acquire()
    out = io.join(root, "forget")
    assert run(_config(paths, _request(tmp_path), out)) == 1
    report = _report(out)
    assert report["status"] == "incomplete"
    assert [i["what"] for i in report["incomplete"]] == ["precompute ds=2026-11-24"]
    assert any(r["member_id"] in FORGET for r in io.read_published(io.join(paths["precompute"], "scores", "ds=2026-11-24")).to_pylist())
    lock.release()
    assert run(_config(paths, _request(tmp_path), out)) == 0
    assert_nothing_left(root)


def test_the_request_may_be_parquet_and_must_hold_ids(tmp_path):
    io.write_table(pa.table({"member_id": ["b", None, "a", "b"], "x": [1, 2, 3, 4]}), str(tmp_path / "req"))
    assert read_member_ids(str(tmp_path / "req")) == ["a", "b"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(InputError, match="no member ids"):
        read_member_ids(str(tmp_path / "empty.txt"))
    io.write_table(pa.table({"id": ["a"]}), str(tmp_path / "bad"))
    with pytest.raises(InputError, match="member_id"):
        read_member_ids(str(tmp_path / "bad"))
    with pytest.raises(InputError, match="required"):
        read_member_ids(None)


def test_the_cli_needs_the_key_and_refuses_another_one(tmp_path, monkeypatch, capsys):
    paths = build_outputs(str(tmp_path / "outputs"))
    args = ["forget", "--members", _request(tmp_path), "--out", str(tmp_path / "forget"),
            "--set", f"precompute=[{paths['precompute']}]", "--set", f"synthesize=[{paths['synthesize']}]",
            "--set", "distill=[]", "--set", "curation=[]", "--set", "tables=[]", "--set", "reports=[]", "--set", "gc_grace_s=0"]
    monkeypatch.delenv(tb.KEY_ENV, raising=False)
    assert main(args) == 2 and tb.KEY_ENV in capsys.readouterr().err
    assert not io.exists(str(tmp_path / "forget"))  # nothing written without the key
    monkeypatch.setenv(tb.KEY_ENV, KEY)
    assert main(args) == 0
    assert "forget: complete: 2 of 3 members found" in capsys.readouterr().out
    monkeypatch.setenv(tb.KEY_ENV, "another-key-0123456789")
    assert main(args) == 2 and "another key" in capsys.readouterr().err


def test_a_request_that_matches_nobody_changes_nothing(tmp_path, key):
    paths = build_outputs(str(tmp_path / "outputs"))
    before = snapshot(paths)
    req = tmp_path / "nobody.txt"
    req.write_text("mem-not-here\n")
    assert run(_config(paths, str(req), str(tmp_path / "forget"))) == 0
    assert snapshot(paths) == before
    man, _ = io.published_files(io.join(paths["precompute"], "scores", "ds=2026-11-24"))
    assert not man["run_id"].startswith("forget-")  # nothing to change: nothing republished
    assert _report(str(tmp_path / "forget"))["members_found"] == 0


def test_reports_are_deleted_only_when_they_name_a_member(tmp_path, key):
    from lantern_batch.forget.job import Matcher, Report, purge_reports

    root = tmp_path / "reports"
    root.mkdir()
    (root / "a.html").write_text("<td>mem-forget-alphabet</td> <td>xmem-forget-alpha</td>")
    (root / "b.html").write_text('{"member": "mem-forget-alpha"}')
    report = Report("f", 1)
    purge_reports(str(root), Matcher(["mem-forget-alpha"], report), report)
    assert sorted(p.name for p in root.iterdir()) == ["a.html"]  # a longer id is another member
    assert report.found == {"mem-forget-alpha"}
