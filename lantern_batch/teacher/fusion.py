"""Fuse several teachers' soft labels and report how much they agree.

For each pair labelled by at least one teacher::

    p_fused = sum_t w_t * sharpen(p_t, T) / sum_t w_t      # over the teachers that labelled it

with ``sharpen(p, T) = p^(1/T)`` renormalised (T = ``fusion.temperature``; 1 leaves p as is).
The fused label is the argmax. The agreement report has, per teacher pair, the share of common
pairs with the same hard label, Cohen's kappa and the 3x3 confusion matrix (rows: first
teacher's label, columns: second's, both in High/Medium/Low order).

Scale: the work is split into 16 buckets by the first hex digit of ``pair_id``; each bucket is
one Ray task that reads only its rows' seven small columns, so memory is ~1/16 of the labels'
key columns. Output: ``OUT/fused/part-<b>.parquet`` and ``OUT/agreement.json``. The table is
withdrawn (marker first) before it is rewritten and ``fused/_SUCCESS`` (the teachers and
temperature fused) is written last: readers use ``fused/`` only with its marker, so a crash
mid-fusion, or a later run with one teacher (which removes ``fused/``), never leaves a stale or
half-written table in use.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from lantern_batch import io
from lantern_batch.schema import FIT_LABELS, TS
from lantern_batch.teacher import store
from lantern_batch.teacher.records import now_utc
from lantern_batch.teacher.soft_labels import sharpen

FUSED_SCHEMA = pa.schema([
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("member_id", pa.string(), nullable=False),
    pa.field("job_id", pa.string(), nullable=False),
    pa.field("fit_label", pa.string(), nullable=False),
    pa.field("p_high", pa.float32()),
    pa.field("p_medium", pa.float32()),
    pa.field("p_low", pa.float32()),
    pa.field("teachers", pa.list_(pa.string())),
    pa.field("n_teachers", pa.int32()),
    pa.field("agree", pa.bool_()),
    pa.field("created_at", TS),
])
"""Fused soft labels: one row per pair labelled by at least one teacher."""

COLUMNS = ["pair_id", "member_id", "job_id", "teacher", "prompt_version", "fit_label",
           "p_high", "p_medium", "p_low"]
BUCKETS = "0123456789abcdef"


def fuse_table(labels: pa.Table, weights: dict[str, float], temperature: float = 1.0) -> tuple[pa.Table, dict]:
    """Fuse the labels of several teachers (pure function; see module doc).

    Args:
        labels: rows with :data:`COLUMNS` (one per pair per teacher).
        weights: teacher name -> weight; teachers not listed are ignored.
        temperature: sharpening temperature applied to each teacher's probabilities.

    Returns:
        (fused rows in :data:`FUSED_SCHEMA`, partial agreement counts:
        ``{"pairs": {"A|B": {"common", "same", "confusion"}}}``).
    """
    names = [n for n in weights]
    labels = labels.filter(pc.is_in(labels.column("teacher"), pa.array(names)))
    by_pair: dict[str, dict[str, Any]] = {}
    for r in labels.to_pylist():
        entry = by_pair.setdefault(r["pair_id"], {"member_id": r["member_id"], "job_id": r["job_id"], "t": {}})
        entry["t"][r["teacher"]] = (r["fit_label"], np.array([r["p_high"], r["p_medium"], r["p_low"]], dtype=np.float64))
    rows = []
    counts: dict[str, dict[str, Any]] = {
        f"{a}|{b}": {"common": 0, "same": 0, "confusion": [[0] * 3 for _ in range(3)]}
        for a, b in itertools.combinations(names, 2)
    }
    now = now_utc()
    for pid in sorted(by_pair):
        entry = by_pair[pid]
        ts = [t for t in names if t in entry["t"]]
        w = np.array([weights[t] for t in ts], dtype=np.float64)
        p = np.stack([sharpen(entry["t"][t][1], temperature) for t in ts])  # [teachers, 3]
        fused = (w[:, None] * p).sum(axis=0) / w.sum() if w.sum() > 0 else p.mean(axis=0)
        hard = [entry["t"][t][0] for t in ts]
        rows.append({
            "pair_id": pid, "member_id": entry["member_id"], "job_id": entry["job_id"],
            "fit_label": FIT_LABELS[int(np.argmax(fused))],
            "p_high": float(fused[0]), "p_medium": float(fused[1]), "p_low": float(fused[2]),
            "teachers": ts, "n_teachers": len(ts), "agree": len(set(hard)) == 1, "created_at": now,
        })
        for a, b in itertools.combinations(names, 2):
            if a in entry["t"] and b in entry["t"]:
                c = counts[f"{a}|{b}"]
                la, lb = entry["t"][a][0], entry["t"][b][0]
                c["common"] += 1
                c["same"] += int(la == lb)
                c["confusion"][FIT_LABELS.index(la)][FIT_LABELS.index(lb)] += 1
    return pa.Table.from_pylist(rows, schema=FUSED_SCHEMA), {"pairs": counts}


def agreement_report(partials: list[dict], teachers: dict[str, float]) -> dict:
    """Sum per-bucket counts into the report: agreement, Cohen's kappa, confusion per pair."""
    total: dict[str, dict[str, Any]] = {}
    for part in partials:
        for key, c in part["pairs"].items():
            t = total.setdefault(key, {"common": 0, "same": 0, "confusion": np.zeros((3, 3), dtype=np.int64)})
            t["common"] += c["common"]
            t["same"] += c["same"]
            t["confusion"] += np.array(c["confusion"], dtype=np.int64)
    report = {"teachers": teachers, "labels": list(FIT_LABELS), "pairwise": {}}
    for key, t in total.items():
        n = t["common"]
        conf = t["confusion"]
        po = t["same"] / n if n else None
        pe = float((conf.sum(axis=1) * conf.sum(axis=0)).sum()) / (n * n) if n else None
        kappa = (po - pe) / (1 - pe) if n and pe is not None and pe < 1 else None
        a, b = key.split("|")
        report["pairwise"][key] = {"first": a, "second": b, "common_pairs": n, "agreement": po,
                                   "cohen_kappa": kappa, "confusion": conf.tolist()}
    return report


def fuse_bucket(out: str, teachers: list[tuple[str, str, float]], temperature: float, bucket: str) -> dict:
    """Ray task: fuse the pairs whose id starts with ``bucket``; write ``fused/part-<b>.parquet``."""
    tables = []
    for name, version, _ in teachers:
        files = io.list_parquet_files(store.labels_dir(out, name))
        if not files:
            continue
        fs, _ = io.filesystem(files[0])
        ds = pads.dataset([io.filesystem(f)[1] for f in files], format="parquet", filesystem=fs)
        flt = pc.starts_with(pc.field("pair_id"), bucket) & (pc.field("prompt_version") == version)
        tables.append(ds.to_table(columns=COLUMNS, filter=flt))
    labels = pa.concat_tables(tables) if tables else pa.schema([(c, pa.string()) for c in COLUMNS]).empty_table()
    fused, partial = fuse_table(labels, {n: w for n, _, w in teachers}, temperature)
    io.write_table(fused, store.fused_dir(out), basename=f"part-{bucket}.parquet")
    partial["rows"] = fused.num_rows
    partial["agree"] = int(pc.sum(fused.column("agree")).as_py() or 0) if fused.num_rows else 0
    return partial


def fuse_and_report(cfg: Any) -> dict:
    """Fuse every teacher of a :class:`~lantern_batch.teacher.config.SynthesizeConfig` run;
    write ``fused/`` and ``agreement.json``; return a summary."""
    import ray

    teachers = [(t.name, t.prompt_version, t.weight) for t in cfg.teachers]
    store.invalidate_fused(cfg.out)
    task = ray.remote(fuse_bucket).options(num_cpus=0.5)
    partials = ray.get([task.remote(cfg.out, teachers, cfg.fusion.temperature, b) for b in BUCKETS])
    report = agreement_report(partials, {n: w for n, _, w in teachers})
    report["fused_rows"] = sum(p["rows"] for p in partials)
    report["all_agree_rows"] = sum(p["agree"] for p in partials)
    report["temperature"] = cfg.fusion.temperature
    io.write_text(io.join(cfg.out, "agreement.json"), json.dumps(report, indent=2) + "\n")
    marker = {"teachers": [{"name": n, "prompt_version": v, "weight": w} for n, v, w in teachers],
              "temperature": cfg.fusion.temperature, "rows": report["fused_rows"]}
    io.write_text(io.join(store.fused_dir(cfg.out), store.FUSED_MARKER), json.dumps(marker, indent=2) + "\n")
    return {"fused_rows": report["fused_rows"], "all_agree_rows": report["all_agree_rows"],
            "agreement": {k: v["agreement"] for k, v in report["pairwise"].items()}}
