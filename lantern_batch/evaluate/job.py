"""``lantern-batch evaluate``: compare the students with the teacher; write the HTML report.

    lantern-batch evaluate --config configs/demo_evaluate.yaml
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/prod_evaluate.yaml

Reads (every input optional; a missing one makes its report section "not available"):

* teacher labels ``LABELS/labels/teacher=NAME/`` or ``LABELS/fused/`` (synthesize output),
* the published precompute partition ``SCORES/scores/ds=…/`` (the files its ``_manifest.json``
  lists, only once ``_SUCCESS`` exists; ``scores/_LATEST`` names the ds by default),
* D_seed, the members' skills and the jobs' required skills (the skill vocabulary),
* ``metrics.json`` next to the exported teacher, classifier and explainer, and the run
  summaries and manifests (throughput per stage).

Writes ``OUT/index.html`` (self-contained: plots are embedded PNG), ``OUT/metrics.json`` and the
resolved config. Tables are streamed in record batches with only the needed columns; label
columns of at most ``max_pairs`` pairs and the explanations of at most ``max_explanations``
pairs are held in memory. Needs no Ray: it runs in the job's driver.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from lantern_batch import io
from lantern_batch.config import config_hash, write_resolved_config
from lantern_batch.errors import NotPublishedError
from lantern_batch.evaluate import metrics as m
from lantern_batch.evaluate.config import EvaluateConfig
from lantern_batch.logs import event, get_logger, timed
from lantern_batch.schema import FIT_LABELS, first_occurrence_mask

log = get_logger(__name__)

PROB_COLUMNS = ("p_high", "p_medium", "p_low")
KEY_SEP = "\x1f"
BATCH_ROWS = 65_536
#: Run summaries a stage may leave next to its output (first found wins).
SUMMARY_NAMES = ("summary.json", "_summary.json", "run_summary.json", "_manifest.json", "manifest.json")


# ---------------------------------------------------------------------------------------------
# Reading


def _dataset(files: list[str]) -> pads.Dataset | None:
    if not files:
        return None
    fs, _ = io.filesystem(files[0])
    return pads.dataset([io.filesystem(f)[1] for f in files], format="parquet", filesystem=fs)


def _dataset_at(path: str | None) -> pads.Dataset | None:
    if not path:
        return None
    return _dataset(io.list_parquet_files(path))


def _batches(ds: pads.Dataset, columns: list[str]) -> Iterator[pa.RecordBatch]:
    yield from ds.to_batches(columns=columns, batch_size=BATCH_ROWS)


def _read_json(path: str) -> dict[str, Any] | None:
    if not io.exists(path):
        return None
    try:
        data = json.loads(io.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError):
        event(log, "evaluate.unreadable_json", path=path)
        return None
    return data if isinstance(data, dict) else {"value": data}


def _subdirs(path: str) -> list[str]:
    fs, p = io.filesystem(path)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=False))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


def _key_column(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """``member_id <US> job_id`` per row: one string key for set membership."""
    mid = pc.cast(batch.column(batch.schema.get_field_index("member_id")), pa.string())
    jid = pc.cast(batch.column(batch.schema.get_field_index("job_id")), pa.string())
    key = pc.binary_join_element_wise(mid, jid, KEY_SEP)
    return key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key


def _hash_unit(keys: list[str]) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per key (blake2b, not Python's salted hash)."""
    out = np.empty(len(keys), dtype=np.float64)
    for i, k in enumerate(keys):
        out[i] = int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") / 2**64
    return out


@dataclass
class LabelTable:
    """Label columns of a teacher or student table, possibly sampled, plus the full distribution."""

    path: str
    table: pa.Table
    """member_id, job_id, fit_label and (when present) p_high, p_medium, p_low."""
    distribution: dict[str, Any]
    """Label distribution over *all* rows (not just the sample)."""
    rows: int
    sampled: bool
    has_explanation: bool
    dataset: pads.Dataset


def read_labels(ds: pads.Dataset, path: str, what: str, max_rows: int) -> LabelTable:
    """Stream the label columns of ``ds``; keep all rows, or a stable sample of ~``max_rows``."""
    names = set(ds.schema.names)
    missing = {"member_id", "job_id", "fit_label"} - names
    if missing:
        raise ValueError(f"{what} at {path}: missing column(s) {sorted(missing)}")
    cols = ["member_id", "job_id", "fit_label"] + [c for c in PROB_COLUMNS if c in names]
    if len(cols) != 3 + len(PROB_COLUMNS):
        cols = cols[:3]  # probabilities are all-or-nothing
    total = ds.count_rows()
    keep_share = min(1.0, max_rows / total) if total else 1.0
    parts, counts = [], {name: 0 for name in FIT_LABELS}
    other = 0
    for batch in _batches(ds, cols):
        labels = batch.column(2).to_pylist()
        for label in labels:
            if label in counts:
                counts[label] += 1
            else:
                other += 1
        if keep_share < 1.0:
            u = _hash_unit(_key_column(batch).to_pylist())
            batch = batch.filter(pa.array(u < keep_share))
        parts.append(batch)
    table = pa.Table.from_batches(parts, schema=pa.schema([ds.schema.field(c) for c in cols])) if parts \
        else pa.table({c: pa.array([], ds.schema.field(c).type) for c in cols})
    table = table.filter(pa.array(first_occurrence_mask(table, ("member_id", "job_id"))))
    n = sum(counts.values()) + other
    dist = {"n": n, "counts": counts, "shares": {k: (v / n if n else None) for k, v in counts.items()}, "other": other}
    return LabelTable(path, table, dist, total, keep_share < 1.0, "explanation" in names, ds)


def read_explanations(ds: pads.Dataset, keys: set[str]) -> dict[str, str | None]:
    """Explanation per key, for the keys asked for only (streamed; first occurrence wins)."""
    out: dict[str, str | None] = {}
    if not keys or "explanation" not in ds.schema.names:
        return out
    value_set = pa.array(sorted(keys), pa.string())
    for batch in _batches(ds, ["member_id", "job_id", "explanation"]):
        key = _key_column(batch)
        mask = pc.is_in(key, value_set=value_set)
        if not pc.any(mask).as_py():
            continue
        for k, text in zip(key.filter(mask).to_pylist(), batch.column(2).filter(mask).to_pylist(), strict=True):
            out.setdefault(k, text)
    return out


@dataclass
class EvalInputs:
    """Everything the report is computed from; None means not available (see ``notes``)."""

    teacher_name: str | None = None
    teacher: LabelTable | None = None
    teacher_explanations_from: pads.Dataset | None = None
    student: LabelTable | None = None
    ds: str | None = None
    manifest: dict[str, Any] | None = None
    seed_distribution: dict[str, Any] | None = None
    member_ds: pads.Dataset | None = None
    vocabulary: set[str] | None = None
    training: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    synthesis_summary: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _pick_teacher(cfg: EvaluateConfig, inputs: EvalInputs) -> tuple[str | None, str | None, list[str]]:
    """(teacher name, its label directory, every teacher=NAME directory)."""
    labels_root = io.join(cfg.labels, "labels")
    teacher_dirs = [d for d in _subdirs(labels_root) if d.startswith("teacher=")]
    all_dirs = [io.join(labels_root, d) for d in teacher_dirs]
    fused = io.join(cfg.labels, "fused")
    if cfg.teacher == "fused" or (cfg.teacher is None and io.list_parquet_files(fused)):
        return "fused", fused, all_dirs
    if cfg.teacher is not None:
        return cfg.teacher, io.join(labels_root, f"teacher={cfg.teacher}"), all_dirs
    if not teacher_dirs:
        return None, None, all_dirs
    if len(teacher_dirs) > 1:
        inputs.notes.append(f"{len(teacher_dirs)} teachers and no fused labels: compared with the first, "
                            f"{teacher_dirs[0].split('=', 1)[1]} (set teacher= to choose)")
    return teacher_dirs[0].split("=", 1)[1], all_dirs[0], all_dirs


def _published_partition(cfg: EvaluateConfig, inputs: EvalInputs) -> tuple[str | None, list[str]]:
    """(ds, data files) of the published scores partition, or (ds or None, []) with a note.

    Reads the way the output contract says readers must (:func:`lantern_batch.io.published_files`):
    ``_SUCCESS`` present and naming the manifest's run, then exactly the files the manifest lists.
    """
    root = io.join(cfg.scores, "scores")
    ds = cfg.ds or io.read_latest(root)
    if ds is None:
        inputs.notes.append(f"no published scores: {io.join(root, io.LATEST)} does not exist")
        return None, []
    part = io.join(root, f"ds={ds}")
    try:
        inputs.manifest, files = io.published_files(part)
    except NotPublishedError as exc:
        inputs.notes.append(f"scores partition ds={ds} is not published: {exc}")
        return ds, []
    return ds, files


def _read_vocabulary(inputs: EvalInputs, cfg: EvaluateConfig) -> None:
    vocab: set[str] = set()
    for path, column, what in ((cfg.inputs.members, "skills", "members"), (cfg.inputs.jobs, "required_skills", "jobs")):
        ds = _dataset_at(path)
        if ds is None or column not in ds.schema.names:
            inputs.notes.append(f"{what}: not found at {path} (skill vocabulary without it)")
            continue
        if what == "members":
            inputs.member_ds = ds
        for batch in _batches(ds, [column]):
            flat = pc.list_flatten(batch.column(0))
            vocab.update(s for s in pc.unique(flat).to_pylist() if s and s.strip())
    inputs.vocabulary = vocab or None


def load_inputs(cfg: EvaluateConfig) -> EvalInputs:
    """Locate and read every input; anything missing is noted, never raised."""
    inputs = EvalInputs()

    name, path, teacher_dirs = _pick_teacher(cfg, inputs)
    ds = _dataset_at(path)
    if ds is None:
        inputs.notes.append(f"no teacher labels found under {io.join(cfg.labels, 'labels')}")
    else:
        try:
            inputs.teacher = read_labels(ds, path, "teacher labels", cfg.max_pairs)
            inputs.teacher_name = name
        except ValueError as exc:
            inputs.notes.append(str(exc))
        if inputs.teacher is not None:
            inputs.teacher_explanations_from = ds if inputs.teacher.has_explanation else None
            if not inputs.teacher.has_explanation:
                for d in teacher_dirs:
                    other = _dataset_at(d)
                    if other is not None and "explanation" in other.schema.names:
                        inputs.teacher_explanations_from = other
                        inputs.notes.append(f"teacher explanations taken from {posixpath.basename(d)} "
                                            f"({name} labels carry none)")
                        break

    inputs.ds, files = _published_partition(cfg, inputs)
    sds = _dataset(files)
    if sds is not None:
        try:
            inputs.student = read_labels(sds, files[0], "precompute scores", cfg.max_pairs)
        except ValueError as exc:
            inputs.notes.append(str(exc))

    if cfg.seed:
        seed_ds = _dataset_at(cfg.seed)
        if seed_ds is not None and "fit_label" in seed_ds.schema.names:
            labels: list[str | None] = []
            for batch in _batches(seed_ds, ["fit_label"]):
                labels.extend(batch.column(0).to_pylist())
            inputs.seed_distribution = m.label_distribution(labels)
        else:
            inputs.notes.append(f"no seed labels at {cfg.seed}")

    _read_vocabulary(inputs, cfg)

    for key, directory in (("teacher_sft", cfg.teacher_model), ("classifier", cfg.classifier),
                           ("explainer", cfg.explainer)):
        inputs.training[key] = _read_json(io.join(directory, "metrics.json")) if directory else None
    for candidate in SUMMARY_NAMES:
        summary = _read_json(io.join(cfg.labels, candidate))
        if summary is not None:
            inputs.synthesis_summary = summary
            break
    return inputs


# ---------------------------------------------------------------------------------------------
# Computing


def _probs(table: pa.Table, prefix: str) -> np.ndarray | None:
    cols = [f"{prefix}{c}" for c in PROB_COLUMNS]
    if not all(c in table.column_names for c in cols):
        return None
    arr = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in cols], axis=1)
    return None if np.isnan(arr).any() else arr


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def _shared_pairs(inputs: EvalInputs) -> pa.Table | None:
    if inputs.teacher is None or inputs.student is None:
        return None
    t = inputs.teacher.table.rename_columns(
        [c if c in ("member_id", "job_id") else f"t_{c}" for c in inputs.teacher.table.column_names])
    s = inputs.student.table.rename_columns(
        [c if c in ("member_id", "job_id") else f"s_{c}" for c in inputs.student.table.column_names])
    joined = t.join(s, keys=["member_id", "job_id"], join_type="inner", use_threads=False)
    # Deterministic order (joins are not): by key.
    return joined.sort_by([("member_id", "ascending"), ("job_id", "ascending")])


def compute_results(inputs: EvalInputs, cfg: EvaluateConfig) -> dict[str, Any]:
    """Every metric of the report, as a JSON-compatible dict (``examples`` hold text)."""
    res: dict[str, Any] = {
        "inputs": {
            "teacher": inputs.teacher_name,
            "teacher_rows": inputs.teacher.rows if inputs.teacher else None,
            "ds": inputs.ds,
            "student_rows": inputs.student.rows if inputs.student else None,
            "notes": list(inputs.notes),
        }
    }
    shared = _shared_pairs(inputs)
    if shared is None or shared.num_rows == 0:
        reason = ("no teacher labels" if inputs.teacher is None else
                  "no published precompute scores" if inputs.student is None else
                  "the teacher labels and the scores share no (member_id, job_id) pair")
        res["agreement"] = _unavailable(reason)
        res["calibration"] = _unavailable(reason)
        shared = None
    else:
        t_labels = shared.column("t_fit_label").to_pylist()
        s_labels = shared.column("s_fit_label").to_pylist()
        conf = m.confusion_matrix(t_labels, s_labels)
        t_probs, s_probs = _probs(shared, "t_"), _probs(shared, "s_")
        res["agreement"] = {
            "available": True,
            "pairs": shared.num_rows,
            "sampled": bool(inputs.teacher.sampled or inputs.student.sampled),
            "accuracy": m.accuracy(conf),
            "macro_f1": m.macro_f1(conf),
            "per_class": m.per_class_scores(conf),
            "confusion": conf.tolist(),
            "labels": list(FIT_LABELS),
            "mean_tvd": m.mean_total_variation(t_probs, s_probs) if t_probs is not None and s_probs is not None else None,
        }
        if s_probs is None:
            res["calibration"] = _unavailable("the scores carry no probabilities")
        else:
            pred, confidence = m.top_label_confidence(s_probs)
            ref = np.array([FIT_LABELS.index(x) if x in FIT_LABELS else -1 for x in t_labels])
            bins = m.reliability_curve(confidence, pred == ref, cfg.calibration_bins)
            res["calibration"] = {
                "available": True,
                "pairs": shared.num_rows,
                "ece": m.expected_calibration_error(bins),
                "bins": [b.__dict__ for b in bins],
            }

    res["distributions"] = {
        "seed": inputs.seed_distribution,
        "teacher": inputs.teacher.distribution if inputs.teacher else None,
        "student": inputs.student.distribution if inputs.student else None,
    }
    res.update(_explanation_results(inputs, cfg, shared))

    throughput: list[dict[str, Any]] = []
    throughput += m.throughput_rows("synthesize", inputs.synthesis_summary)
    for key in ("teacher_sft", "classifier", "explainer"):
        throughput += m.throughput_rows(f"distill {key}", inputs.training.get(key))
    throughput += m.throughput_rows("precompute", inputs.manifest)
    res["throughput"] = {"available": bool(throughput), "rows": throughput} if throughput else \
        _unavailable("no run summary or manifest reports rates or timings")
    res["manifest"] = _manifest_summary(inputs.manifest)
    res["training"] = {k: (_without_text(v) if v is not None else None) for k, v in inputs.training.items()}
    return res


def _without_text(obj: Any) -> Any:
    """Numbers, ids and lists of numbers of a metrics.json; free text (e.g. the explainer's
    ``examples``) is dropped so that ``metrics.json`` and the report's tables carry none."""
    if isinstance(obj, dict):
        kept = {k: _without_text(v) for k, v in obj.items() if k != "examples"}
        return {k: v for k, v in kept.items() if v is not _DROP}
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, str):
        # Versions, refs and paths have no whitespace; sentences do.
        return obj if len(obj) <= 200 and not any(c.isspace() for c in obj) else _DROP
    if isinstance(obj, list):
        items = [_without_text(v) for v in obj]
        numeric = all(isinstance(v, (int, float, list)) and not isinstance(v, bool) for v in items)
        return items if numeric and _DROP not in items else _DROP
    return _DROP


_DROP = object()


def _manifest_summary(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    if manifest is None:
        return None
    return {k: v for k, v in manifest.items() if k not in ("files",) and not isinstance(v, list)}


def _explanation_results(inputs: EvalInputs, cfg: EvaluateConfig, shared: pa.Table | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    student_has = inputs.student is not None and inputs.student.has_explanation
    teacher_src = inputs.teacher_explanations_from
    if shared is None or not student_has or teacher_src is None:
        reason = ("no shared (teacher, student) pairs" if shared is None else
                  "the scores carry no explanations (no explainer ran)" if not student_has else
                  "the teacher labels carry no explanations")
        for key in ("rouge", "consistency", "skill_claims"):
            out[key] = _unavailable(reason)
        out["examples"] = []
        return out

    keys = _key_column(shared).to_pylist()
    order = np.argsort(_hash_unit(keys), kind="stable")[: cfg.max_explanations]
    chosen = sorted(int(i) for i in order)
    sample = shared.take(pa.array(chosen, pa.int64()))
    sample_keys = [keys[i] for i in chosen]
    wanted = set(sample_keys)
    s_text = read_explanations(inputs.student.dataset, wanted)
    t_text = read_explanations(teacher_src, wanted)
    student_expl = [s_text.get(k) for k in sample_keys]
    teacher_expl = [t_text.get(k) for k in sample_keys]
    s_labels = sample.column("s_fit_label").to_pylist()
    t_labels = sample.column("t_fit_label").to_pylist()
    with_student = sum(1 for x in student_expl if x and x.strip())
    if with_student == 0 or not any(x and x.strip() for x in teacher_expl):
        reason = ("the scores carry no explanations for the compared pairs (no explainer ran, "
                  "or its policy selected none of them)" if with_student == 0 else
                  "the teacher labels carry no explanations for the compared pairs")
        for key in ("rouge", "consistency", "skill_claims"):
            out[key] = _unavailable(reason)
        out["examples"] = []
        return out

    rouge = m.rouge_scores(student_expl, teacher_expl)
    out["rouge"] = {"available": rouge["n"] > 0, "pairs_sampled": len(sample_keys),
                    "explained_pairs": with_student, **rouge}
    if rouge["n"] == 0:
        out["rouge"]["reason"] = "no pair has both a student and a teacher explanation"
    out["consistency"] = {
        "available": True,
        "student": m.consistency(s_labels, student_expl),
        "teacher": m.consistency(t_labels, teacher_expl),
    }

    if not inputs.vocabulary or inputs.member_ds is None:
        out["skill_claims"] = _unavailable("no skill vocabulary (members/jobs tables not found)")
    else:
        member_ids = {k.split(KEY_SEP, 1)[0] for k in sample_keys}
        skills = _member_skills(inputs.member_ds, member_ids)
        matcher = m.SkillMatcher(inputs.vocabulary)
        own = [skills.get(k.split(KEY_SEP, 1)[0]) for k in sample_keys]
        out["skill_claims"] = {
            "available": True,
            "vocabulary_size": len(inputs.vocabulary),
            "student": m.unsupported_claims(student_expl, own, matcher),
            "teacher": m.unsupported_claims(teacher_expl, own, matcher),
        }
    out["examples"] = _examples(sample_keys, t_labels, s_labels, teacher_expl, student_expl, cfg.num_examples)
    return out


def _member_skills(member_ds: pads.Dataset, member_ids: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    value_set = pa.array(sorted(member_ids), pa.string())
    for batch in _batches(member_ds, ["member_id", "skills"]):
        mask = pc.is_in(pc.cast(batch.column(0), pa.string()), value_set=value_set)
        for mid, skills in zip(batch.column(0).filter(mask).to_pylist(), batch.column(1).filter(mask).to_pylist(), strict=True):
            out.setdefault(mid, [s for s in (skills or []) if s])
    return out


def _examples(keys, t_labels, s_labels, t_expl, s_expl, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` pairs with both explanations, taking the student's labels in turn."""
    by_label: dict[str, list[int]] = {name: [] for name in FIT_LABELS}
    for i, (a, b) in enumerate(zip(t_expl, s_expl, strict=True)):
        if a and b and s_labels[i] in by_label:
            by_label[s_labels[i]].append(i)
    picked: list[int] = []
    while len(picked) < n and any(by_label.values()):
        for name in FIT_LABELS:
            if by_label[name] and len(picked) < n:
                picked.append(by_label[name].pop(0))
    rows = []
    for i in picked:
        member_id, job_id = keys[i].split(KEY_SEP, 1)
        rows.append({
            "member_id": member_id, "job_id": job_id,
            "teacher_label": t_labels[i], "student_label": s_labels[i],
            "teacher_explanation": t_expl[i], "student_explanation": s_expl[i],
            "student_stance": m.explanation_stance(s_expl[i]),
        })
    return rows


# ---------------------------------------------------------------------------------------------
# The job


def run(cfg: EvaluateConfig) -> int:
    """Compute the metrics, write ``OUT/index.html`` and ``OUT/metrics.json``; returns 0."""
    from lantern_batch.evaluate.report import render_report

    timings: dict[str, float] = {}
    with timed(timings, "load_s"):
        inputs = load_inputs(cfg)
    with timed(timings, "metrics_s"):
        results = compute_results(inputs, cfg)
    results["config_hash"] = config_hash(cfg)
    with timed(timings, "render_s"):
        html = render_report(results, title=cfg.title)
    results["timings"] = timings
    report = io.join(cfg.out, "index.html")
    io.write_text(report, html)
    io.write_text(io.join(cfg.out, "metrics.json"), metrics_json(results))
    write_resolved_config(cfg, cfg.out)
    agreement = results["agreement"]
    event(log, "evaluate.done", report=report, pairs=agreement.get("pairs", 0),
          accuracy=agreement.get("accuracy", "n/a"), notes=len(inputs.notes), **timings)
    for note in inputs.notes:
        event(log, "evaluate.note", note=note)
    return 0


def metrics_json(results: dict[str, Any]) -> str:
    """``metrics.json``: every number of the report; explanation text left out."""
    numbers = {k: v for k, v in results.items() if k != "examples"}
    return json.dumps(numbers, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
