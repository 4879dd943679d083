"""``lantern-batch evaluate``: compare the students with the teacher; write the HTML report.

    lantern-batch evaluate --config configs/demo_evaluate.yaml
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/prod_evaluate.yaml

Reads (every input optional; a missing one makes its report section "not available"):

* teacher labels ``LABELS/labels/teacher=NAME/`` or ``LABELS/fused/`` (synthesize output),
* the published precompute partition ``SCORES/scores/ds=…/`` (the files listed by the manifest
  of the run its ``_SUCCESS`` names, ``_manifest-<run_id>.json``; ``scores/_LATEST`` names the
  ds by default),
* D_seed, and the member and job rows of the judged pairs (grounding of the explanations),
* ``metrics.json`` next to the exported teacher, classifier and explainer, the
  ``resolved_config.yaml`` next to the classifier and explainer (their held-out split), and the
  run summaries and manifests (throughput per stage).

Explanations are judged on held-out pairs only (:class:`HeldoutSplit`): pairs a student trained
on would flatter it.

The first screen's table of models (``results["models"]``) puts each model's fit labels on
held-out pairs side by side: the teacher before and after SFT (its export's ``metrics.json``),
the teacher labels, the classifier and the label the explainer's text states, each against the
fit policy (:func:`lantern_batch.policy.score_pair` of the pair's member and job rows: what the
demo world is generated from, so its ground truth) and against the teacher.

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
import yaml

from lantern_batch import io, models
from lantern_batch.config import config_hash, write_resolved_config
from lantern_batch.distill.data import heldout_mask
from lantern_batch.errors import InputError, NotPublishedError
from lantern_batch.evaluate import metrics as m
from lantern_batch.evaluate.config import EvaluateConfig
from lantern_batch.logs import event, get_logger, timed
from lantern_batch.metrics import calibration, classification_report, rouge_scores
from lantern_batch.policy import score_pair
from lantern_batch.schema import FIT_LABELS, first_occurrence_mask
from lantern_batch.teacher.store import FUSED_MARKER, fused_marker

log = get_logger(__name__)

PROB_COLUMNS = ("p_high", "p_medium", "p_low")
KEY_SEP = "\x1f"
BATCH_ROWS = 65_536
#: Run summaries a stage may leave next to its output (first found wins).
SUMMARY_NAMES = ("summary.json", "_summary.json", "run_summary.json", "_manifest.json", "manifest.json")
#: Member and job columns the explanation validator and the fit policy read (those the tables
#: have are read).
MEMBER_COLUMNS = ("member_id", "headline", "summary", "current_title", "seniority", "years_experience",
                  "skills", "experience", "education", "location")
JOB_COLUMNS = ("job_id", "title", "company", "description", "seniority", "required_skills", "location",
               "workplace_type")
#: Result fields that hold explanation text: kept out of ``metrics.json``.
TEXT_FIELDS = ("teacher_explanation", "student_explanation")
#: Result lists of explanation pairs whose text ``metrics.json`` leaves out (ids, labels, reasons kept).
PAIR_LISTS = ("worst_explanations", "good_explanations")
#: Explanations shown on the first screen: this many that pass every check, and the worst this many.
SUMMARY_EXAMPLES = 3


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


def explained_keys(ds: pads.Dataset, keys: set[str]) -> set[str]:
    """The keys (of those asked for) that precompute selected for an explanation.

    ``explainer_version`` non-null marks a selected row (its explanation is null only when the
    explainer failed on it); scores without that column count the rows whose explanation is
    non-null. Streamed over the key columns only.
    """
    out: set[str] = set()
    names = ds.schema.names
    if not keys or "explanation" not in names:
        return out
    marker = "explainer_version" if "explainer_version" in names else "explanation"
    value_set = pa.array(sorted(keys), pa.string())
    for batch in _batches(ds, ["member_id", "job_id", marker]):
        key = _key_column(batch)
        mask = pc.and_(pc.is_in(key, value_set=value_set), pc.is_valid(batch.column(2)))
        out.update(key.filter(mask).to_pylist())
    return out


def read_rows(ds: pads.Dataset | None, id_column: str, ids: set[str], columns: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``to_pylist()`` rows of ``ds`` whose ``id_column`` is in ``ids``, with those of ``columns``
    the table has (streamed; first occurrence wins)."""
    out: dict[str, dict[str, Any]] = {}
    if ds is None or not ids or id_column not in ds.schema.names:
        return out
    cols = [c for c in columns if c in ds.schema.names]
    value_set = pa.array(sorted(ids), pa.string())
    for batch in _batches(ds, cols):
        mask = pc.is_in(pc.cast(batch.column(cols.index(id_column)), pa.string()), value_set=value_set)
        if not pc.any(mask).as_py():
            continue
        for row in batch.filter(mask).to_pylist():
            out.setdefault(str(row[id_column]), row)
    return out


@dataclass
class HeldoutSplit:
    """The pairs no student trained on, by the rule the distill runs applied.

    Distill holds a pair out when :func:`lantern_batch.distill.data.heldout_mask` says so with
    the job's ``data.holdout_fraction`` and ``data.split_salt``. Evaluate reads those two values
    from the ``resolved_config.yaml`` each distill job writes into its export (classifier and
    explainer), and applies the same function: the export is what precompute ran, it carries the
    values that run actually used (not today's defaults), and it outlives the run's work
    directory, which holds the examples table with its ``heldout`` column but is scratch space.
    A pair counts as held out only when every student held it out. A student export that records
    no split uses ``holdout_fraction`` / ``split_salt`` of the evaluate config when set; without
    either, the split is unknown and the explanation checks are not available.
    """

    rules: list[dict[str, Any]] = field(default_factory=list)
    """One ``{"student", "holdout_fraction", "split_salt", "from"}`` per student export."""
    reason: str | None = None
    """Why the split is unknown (None: it is known)."""

    @property
    def known(self) -> bool:
        return self.reason is None and bool(self.rules)

    def mask(self, member_ids: list[str | None], job_ids: list[str | None]) -> np.ndarray:
        """True for the pairs every student held out."""
        out = np.ones(len(member_ids), dtype=bool)
        for fraction, salt in {(r["holdout_fraction"], r["split_salt"]) for r in self.rules}:
            out &= heldout_mask(member_ids, job_ids, fraction, salt)
        return out


def _is_dir(path: str) -> bool:
    fs, p = io.filesystem(path)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def read_heldout_split(cfg: EvaluateConfig) -> HeldoutSplit:
    """The held-out rule of the classifier and explainer exports (see :class:`HeldoutSplit`)."""
    split = HeldoutSplit()
    configured = ({"holdout_fraction": cfg.holdout_fraction, "split_salt": cfg.split_salt}
                  if cfg.holdout_fraction is not None else None)
    for student, directory in (("classifier", cfg.classifier), ("explainer", cfg.explainer)):
        if not directory or not _is_dir(directory):
            continue
        path = io.join(directory, "resolved_config.yaml")
        data: Any = None
        if io.exists(path):
            try:
                data = (yaml.safe_load(io.read_text(path)) or {}).get("data")
            except (yaml.YAMLError, AttributeError):
                event(log, "evaluate.unreadable_config", path=path)
        if isinstance(data, dict) and data.get("holdout_fraction") is not None:
            split.rules.append({"student": student, "holdout_fraction": float(data["holdout_fraction"]),
                                "split_salt": str(data.get("split_salt", "lantern")), "from": path})
        elif configured is not None:
            split.rules.append({"student": student, **configured, "from": "evaluate config"})
        else:
            split.reason = (f"the {student} export at {directory} records no held-out split (no data.holdout_fraction "
                            "in its resolved_config.yaml); set holdout_fraction and split_salt to the distill run's")
            return split
    if not split.rules:
        if configured is None:
            split.reason = ("no classifier or explainer export found to read the held-out split from; "
                            "set holdout_fraction and split_salt to the distill runs'")
        else:
            split.rules.append({"student": "all", **configured, "from": "evaluate config"})
    return split


@dataclass
class EvalInputs:
    """Everything the report is computed from; None means not available (see ``notes``)."""

    teacher_name: str | None = None
    teacher_prompt_version: str | None = None
    teacher: LabelTable | None = None
    teacher_explanations_from: pads.Dataset | None = None
    student: LabelTable | None = None
    ds: str | None = None
    manifest: dict[str, Any] | None = None
    seed_distribution: dict[str, Any] | None = None
    member_ds: pads.Dataset | None = None
    job_ds: pads.Dataset | None = None
    heldout: HeldoutSplit = field(default_factory=HeldoutSplit)
    training: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    synthesis_summary: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _pick_teacher(cfg: EvaluateConfig, inputs: EvalInputs) -> tuple[str | None, str | None, list[str]]:
    """(teacher name, its label directory, every teacher=NAME directory)."""
    labels_root = io.join(cfg.labels, "labels")
    teacher_dirs = [d for d in _subdirs(labels_root) if d.startswith("teacher=")]
    all_dirs = [io.join(labels_root, d) for d in teacher_dirs]
    fused = io.join(cfg.labels, "fused")
    complete = fused_marker(cfg.labels) is not None
    if cfg.teacher == "fused" or (cfg.teacher is None and complete):
        if not complete:
            inputs.notes.append(f"fused labels at {fused} are incomplete (no {FUSED_MARKER}): not compared")
            return "fused", None, all_dirs
        return "fused", fused, all_dirs
    if cfg.teacher is None and io.list_parquet_files(fused):
        inputs.notes.append(f"fused labels at {fused} are incomplete (no {FUSED_MARKER}): not used")
    if cfg.teacher is not None:
        return cfg.teacher, io.join(labels_root, f"teacher={cfg.teacher}"), all_dirs
    if not teacher_dirs:
        return None, None, all_dirs
    if len(teacher_dirs) > 1:
        inputs.notes.append(f"{len(teacher_dirs)} teachers and no fused labels: compared with the first, "
                            f"{teacher_dirs[0].split('=', 1)[1]} (set teacher= to choose)")
    return teacher_dirs[0].split("=", 1)[1], all_dirs[0], all_dirs


def one_prompt_version(ds: pads.Dataset, path: str, configured: str | None) -> tuple[pads.Dataset, str | None]:
    """``ds`` (teacher labels at ``path``) restricted to one prompt version, and that version
    (:func:`lantern_batch.teacher.store.choose_prompt_version`; labels without the column, such
    as ``fused``, are returned as they are, with None).

    Raises:
        InputError: several versions and none configured, or a configured one they lack.
    """
    from lantern_batch.teacher.store import choose_prompt_version, label_prompt_versions

    if "prompt_version" not in ds.schema.names:
        return ds, None
    version = choose_prompt_version(label_prompt_versions(io.list_parquet_files(path)), configured,
                                    f"teacher labels at {path}")
    if version is None:
        return ds, None
    return ds.filter(pc.field("prompt_version") == version), version


def _published_partition(cfg: EvaluateConfig, inputs: EvalInputs) -> tuple[str | None, list[str]]:
    """(ds, data files) of the published scores partition, or (ds or None, []) with a note.

    Reads the way the output contract says readers must (:func:`lantern_batch.io.published_files`):
    the run ``_SUCCESS`` names, that run's manifest, then exactly the files the manifest lists.
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


def _read_entities(inputs: EvalInputs, cfg: EvaluateConfig) -> None:
    for path, key, what in ((cfg.inputs.members, "member_id", "members"), (cfg.inputs.jobs, "job_id", "jobs")):
        ds = _dataset_at(path)
        if ds is None or key not in ds.schema.names:
            inputs.notes.append(f"{what}: not found at {path} (explanations are judged without grounding "
                                "checks, and the pairs get no policy labels)")
            continue
        setattr(inputs, "member_ds" if what == "members" else "job_ds", ds)


def load_inputs(cfg: EvaluateConfig) -> EvalInputs:
    """Locate and read every input; anything missing is noted, never raised."""
    inputs = EvalInputs()

    name, path, teacher_dirs = _pick_teacher(cfg, inputs)
    ds = _dataset_at(path)
    unusable = None
    if ds is not None and path is not None:
        try:  # one prompt version's labels only, never a mix
            ds, inputs.teacher_prompt_version = one_prompt_version(ds, path, cfg.teacher_prompt_version)
        except InputError as exc:
            ds, unusable = None, f"teacher labels not compared: {exc}"
    if ds is None:
        inputs.notes.append(unusable or f"no teacher labels found under {io.join(cfg.labels, 'labels')}")
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
                    try:
                        other = one_prompt_version(other, d, None)[0] if other is not None else None
                    except InputError:
                        continue  # several prompt versions: no single teacher text to take
                    # A teacher that writes no text (the engagement model) has the column, all null.
                    if (other is not None and "explanation" in other.schema.names
                            and other.count_rows(filter=pads.field("explanation").is_valid()) > 0):
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

    _read_entities(inputs, cfg)
    inputs.heldout = read_heldout_split(cfg)

    for key, directory in (("teacher_sft", cfg.teacher_model), ("classifier", cfg.classifier),
                           ("explainer", cfg.explainer)):
        inputs.training[key] = (_read_json(io.join(models.export_root(directory), "metrics.json"))
                                if directory else None)
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


def _prefixed(table: pa.Table, prefix: str) -> pa.Table:
    """``table`` with every column but the key prefixed (``t_`` teacher, ``s_`` student)."""
    return table.rename_columns([c if c in ("member_id", "job_id") else f"{prefix}{c}" for c in table.column_names])


def _shared_pairs(inputs: EvalInputs) -> pa.Table | None:
    if inputs.teacher is None or inputs.student is None:
        return None
    t = _prefixed(inputs.teacher.table, "t_")
    s = _prefixed(inputs.student.table, "s_")
    joined = t.join(s, keys=["member_id", "job_id"], join_type="inner", use_threads=False)
    # Deterministic order (joins are not): by key.
    return joined.sort_by([("member_id", "ascending"), ("job_id", "ascending")])


def compute_results(inputs: EvalInputs, cfg: EvaluateConfig) -> dict[str, Any]:
    """Every metric of the report, as a JSON-compatible dict (``examples`` hold text)."""
    res: dict[str, Any] = {
        "inputs": {
            "teacher": inputs.teacher_name,
            "teacher_prompt_version": inputs.teacher_prompt_version,
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
        report = classification_report(t_labels, s_labels)
        t_probs, s_probs = _probs(shared, "t_"), _probs(shared, "s_")
        res["agreement"] = {
            "available": True,
            "pairs": shared.num_rows,
            "sampled": bool(inputs.teacher.sampled or inputs.student.sampled),
            **{k: report[k] for k in ("accuracy", "macro_f1", "per_class", "confusion", "labels")},
            "mean_tvd": m.mean_total_variation(t_probs, s_probs) if t_probs is not None and s_probs is not None else None,
        }
        if s_probs is None:
            res["calibration"] = _unavailable("the scores carry no probabilities")
        else:
            # n, ece and the bins of the reliability curve, as distill's metrics.json computes its ECE.
            res["calibration"] = {"available": True, "pairs": shared.num_rows,
                                  **calibration(s_probs, t_labels, cfg.calibration_bins)}

    res["distributions"] = {
        "seed": inputs.seed_distribution,
        "teacher": inputs.teacher.distribution if inputs.teacher else None,
        "student": inputs.student.distribution if inputs.student else None,
    }
    explanations = _explanation_results(inputs, cfg, shared)
    judged = explanations.pop("judged", [])
    res.update(explanations)
    res["models"] = _model_results(inputs, cfg, shared, judged, res)

    throughput: list[dict[str, Any]] = []
    throughput += m.throughput_rows("synthesize", inputs.synthesis_summary)
    for key in ("teacher_sft", "classifier", "explainer"):
        throughput += m.throughput_rows(f"distill {key}", inputs.training.get(key))
    throughput += m.throughput_rows("precompute", inputs.manifest)
    res["throughput"] = {"available": bool(throughput), "rows": throughput} if throughput else \
        _unavailable("no run summary or manifest reports rates or timings")
    res["manifest"] = _manifest_summary(inputs.manifest)
    res["published"] = m.published_explanations(inputs.manifest)
    res["teacher_outputs"] = m.teacher_outputs(inputs.synthesis_summary)
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


EXPLANATION_SECTIONS = ("rouge", "explanations")


def _explanations_unavailable(reason: str, heldout: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {key: _unavailable(reason) for key in EXPLANATION_SECTIONS}
    if heldout is not None:
        out["explanations"]["heldout"] = heldout
    out["examples"] = []
    out["worst_explanations"] = []
    out["good_explanations"] = []
    return out


def _explanation_results(inputs: EvalInputs, cfg: EvaluateConfig, shared: pa.Table | None) -> dict[str, Any]:
    """ROUGE and the validator's verdicts on the student's and the teacher's explanations of
    held-out pairs the student was asked to explain (a stable sample of at most
    ``max_explanations``); the five worst student explanations next to the teacher's, and
    :data:`SUMMARY_EXAMPLES` valid ones (the lowest pair-key hashes: a stable choice). Every judged
    pair's row (with the policy's label and the label its explanation states) is returned under
    ``judged`` for :func:`_model_results`; the caller removes it."""
    if shared is None:
        return _explanations_unavailable("no shared (teacher, student) pairs")
    if inputs.student is None or not inputs.student.has_explanation:
        return _explanations_unavailable("the scores carry no explanations (no explainer ran)")
    if not inputs.heldout.known:
        return _explanations_unavailable(
            f"the held-out split is unknown: {inputs.heldout.reason or 'no student export was read'}")

    keys = _key_column(shared).to_pylist()
    member_ids = shared.column("member_id").to_pylist()
    job_ids = shared.column("job_id").to_pylist()
    held = inputs.heldout.mask(member_ids, job_ids)
    held_keys = {k for k, h in zip(keys, held, strict=True) if h}
    explained = explained_keys(inputs.student.dataset, held_keys)
    candidates = [i for i, k in enumerate(keys) if k in explained]
    order = np.argsort(_hash_unit([keys[i] for i in candidates]), kind="stable")[: cfg.max_explanations]
    chosen = sorted(candidates[int(i)] for i in order)
    heldout = {"rules": inputs.heldout.rules, "shared_pairs": len(keys), "heldout_pairs": len(held_keys),
               "training_pairs_excluded": len(keys) - len(held_keys), "explained_heldout_pairs": len(explained),
               "judged_pairs": len(chosen)}
    if not chosen:
        reason = (f"none of the {len(keys):,} shared pairs is held out from training" if not held_keys else
                  f"the scores carry no explanations for the {len(held_keys):,} held-out shared pairs "
                  "(no explainer ran, or its policy selected none of them)")
        return _explanations_unavailable(reason, heldout)

    sample = shared.take(pa.array(chosen, pa.int64()))
    sample_keys = [keys[i] for i in chosen]
    wanted = set(sample_keys)
    s_text = read_explanations(inputs.student.dataset, wanted)
    t_source = inputs.teacher_explanations_from
    t_text = read_explanations(t_source, wanted) if t_source is not None else {}
    student_expl = [s_text.get(k) for k in sample_keys]
    teacher_expl = [t_text.get(k) for k in sample_keys]
    s_labels = sample.column("s_fit_label").to_pylist()
    t_labels = sample.column("t_fit_label").to_pylist()

    members = read_rows(inputs.member_ds, "member_id", {k.split(KEY_SEP, 1)[0] for k in sample_keys}, MEMBER_COLUMNS)
    jobs = read_rows(inputs.job_ds, "job_id", {k.split(KEY_SEP, 1)[1] for k in sample_keys}, JOB_COLUMNS)
    member_rows = [members.get(k.split(KEY_SEP, 1)[0]) for k in sample_keys]
    job_rows = [jobs.get(k.split(KEY_SEP, 1)[1]) for k in sample_keys]
    grounded = [mem is not None and job is not None for mem, job in zip(member_rows, job_rows, strict=True)]

    policy = [_policy_label(mem, job) for mem, job in zip(member_rows, job_rows, strict=True)]
    stated, _ = m.explanation_labels(student_expl)

    s_checks = m.judge_explanations(student_expl, s_labels, member_rows, job_rows)
    out: dict[str, Any] = {"explanations": {
        "available": True,
        "heldout": heldout,
        "student": {"available": True, **m.explanation_quality(student_expl, s_labels, s_checks, grounded)},
    }}
    teacher_has = any(x and x.strip() for x in teacher_expl)
    t_checks = m.judge_explanations(teacher_expl, t_labels, member_rows, job_rows) if teacher_has else None
    out["explanations"]["teacher"] = ({"available": True, **m.explanation_quality(teacher_expl, t_labels, t_checks, grounded)}
                                      if teacher_has
                                      else _unavailable("the teacher labels carry no explanations for the judged pairs"))

    if teacher_has:
        rouge = rouge_scores(student_expl, teacher_expl)
        out["rouge"] = {"available": rouge["n"] > 0, "judged_pairs": len(chosen), **rouge}
    else:
        out["rouge"] = _unavailable("the teacher labels carry no explanations for the judged pairs")

    rows = _pair_rows(sample_keys, t_labels, s_labels, teacher_expl, student_expl, s_checks, t_checks,
                      policy, stated)
    out["worst_explanations"] = [rows[i] for i in m.worst_explanations(s_checks, 5)]
    valid = [i for i, c in enumerate(s_checks) if c.ok]
    order = np.argsort(_hash_unit([sample_keys[i] for i in valid]), kind="stable")[:SUMMARY_EXAMPLES]
    out["good_explanations"] = [rows[valid[int(i)]] for i in order]
    out["examples"] = _examples(rows, s_labels, cfg.num_examples) if teacher_has else []
    out["judged"] = rows
    return out


def _pair_rows(keys, t_labels, s_labels, t_expl, s_expl, s_checks, t_checks, policy, stated) -> list[dict[str, Any]]:
    rows = []
    for i, key in enumerate(keys):
        member_id, job_id = key.split(KEY_SEP, 1)
        rows.append({
            "member_id": member_id, "job_id": job_id,
            "teacher_label": t_labels[i], "student_label": s_labels[i],
            "policy_label": policy[i], "stated_label": stated[i],
            "teacher_explanation": t_expl[i], "student_explanation": s_expl[i],
            "student_reasons": list(s_checks[i].reasons),
            "teacher_reasons": list(t_checks[i].reasons) if t_checks is not None else None,
        })
    return rows


def _examples(rows: list[dict[str, Any]], s_labels: list[str | None], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` pairs with both explanations, taking the student's labels in turn."""
    by_label: dict[str, list[int]] = {name: [] for name in FIT_LABELS}
    for i, row in enumerate(rows):
        if row["teacher_explanation"] and row["student_explanation"] and s_labels[i] in by_label:
            by_label[s_labels[i]].append(i)
    picked: list[int] = []
    while len(picked) < n and any(by_label.values()):
        for name in FIT_LABELS:
            if by_label[name] and len(picked) < n:
                picked.append(by_label[name].pop(0))
    return [rows[i] for i in picked]


# ---------------------------------------------------------------------------------------------
# The table of models (first screen)


def _policy_label(member: dict[str, Any] | None, job: dict[str, Any] | None) -> str | None:
    """The fit policy's label of a pair; None when its member or job row is unknown or malformed."""
    if member is None or job is None:
        return None
    try:
        return score_pair(member, job).fit_label
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def policy_labels(inputs: EvalInputs, member_ids: list[Any], job_ids: list[Any]) -> list[str | None]:
    """:func:`lantern_batch.policy.score_pair` label per pair from the members and jobs tables
    (streamed: only the rows of these pairs are read); None where a row is missing."""
    members = read_rows(inputs.member_ds, "member_id", {str(x) for x in member_ids}, MEMBER_COLUMNS)
    jobs = read_rows(inputs.job_ds, "job_id", {str(x) for x in job_ids}, JOB_COLUMNS)
    return [_policy_label(members.get(str(mid)), jobs.get(str(jid))) for mid, jid in zip(member_ids, job_ids, strict=True)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _agreement_cell(reference: list[str | None], labels: list[str | None], what: str) -> dict[str, Any]:
    scores = m.label_agreement(reference, labels)
    if not scores["n"]:
        return _unavailable(f"no pair has both a {what} label and a label of this model")
    return {"available": True, **scores}


def _model_row(key: str, name: str, pairs: str, labels: list[str | None], policy: list[str | None] | dict[str, Any],
               teacher: list[str | None] | dict[str, Any] | None, probs: np.ndarray | dict[str, Any] | None,
               cfg: EvaluateConfig, **extra: Any) -> dict[str, Any]:
    """One row of the table of models: a model's ``labels`` (one per pair) against the policy's and
    the teacher's labels of the same pairs.

    ``policy`` and ``teacher`` are those reference labels, aligned with ``labels``, or a
    not-available dict saying why there are none; ``teacher`` None: not applicable (the row is
    the teacher). ``probs`` [n, 3] gives the ECE against the policy; a not-available dict, or None
    when the model has no probabilities at all (not applicable).
    """
    row: dict[str, Any] = {"key": key, "model": name, "available": True, "pairs": pairs,
                           "n": sum(1 for x in labels if x in FIT_LABELS), **extra}
    row["policy"] = policy if isinstance(policy, dict) else _agreement_cell(policy, labels, "policy")
    row["teacher"] = teacher if teacher is None or isinstance(teacher, dict) else _agreement_cell(teacher, labels, "teacher")
    if probs is None or isinstance(probs, dict):
        row["ece"] = probs
    elif isinstance(policy, dict):
        row["ece"] = _unavailable(policy["reason"])
    else:
        ece = calibration(probs, policy, cfg.calibration_bins)
        row["ece"] = ({"available": True, "n": ece["n"], "ece": ece["ece"]} if ece["n"]
                      else _unavailable("no pair has a policy label"))
    return row


SFT_ROWS = {"before": "T2 before SFT", "after": "T2 after SFT"}


def _sft_row(inputs: EvalInputs, cfg: EvaluateConfig, when: str) -> dict[str, Any]:
    """The teacher's label agreement before or after SFT, as its export's ``metrics.json`` records
    it (``label_agreement_before`` / ``_after``: distill teacher-sft's held-out D_seed pairs, whose
    labels are the policy's)."""
    head = {"key": f"t2_{when}", "model": SFT_ROWS[when]}
    metrics = inputs.training.get("teacher_sft")
    if metrics is None:
        reason = ("no teacher_model export is configured" if not cfg.teacher_model
                  else f"no readable metrics.json in the teacher export {cfg.teacher_model}")
        return {**head, **_unavailable(reason)}
    part = metrics.get(f"label_agreement_{when}")
    if not isinstance(part, dict) or not _number(part.get("accuracy")) or not _number(part.get("n")) or not part["n"]:
        reason = f"the teacher export's metrics.json records no label_agreement_{when} with an accuracy and n"
        if isinstance(part, dict) and not part:
            reason += " (teacher SFT had no held-out seed pairs)"
        return {**head, **_unavailable(reason)}
    return _recorded_row(head, part, "the teacher export's metrics.json records no ECE",
                         "held-out D_seed pairs of distill teacher-sft (seed labels are the policy's)",
                         io.join(cfg.teacher_model or "", "metrics.json"))


def _recorded_row(head: dict[str, Any], part: dict[str, Any], no_ece: str, pairs: str, source: str) -> dict[str, Any]:
    """A row of the table of models from scores an export's ``metrics.json`` records against
    policy labels (``n``, ``accuracy``, ``macro_f1``, ``ece``, ``confusion``)."""
    n = int(part["n"])
    policy: dict[str, Any] = {"available": True, "n": n, "agreement": float(part["accuracy"]),
                              "macro_f1": float(part["macro_f1"]) if _number(part.get("macro_f1")) else None}
    if isinstance(part.get("confusion"), list):
        policy["confusion"] = part["confusion"]
    ece = ({"available": True, "n": n, "ece": float(part["ece"])} if _number(part.get("ece")) else _unavailable(no_ece))
    return {**head, "available": True, "n": n, "policy": policy, "teacher": None, "ece": ece,
            "pairs": pairs, "from": source}


def _classifier_seed_row(inputs: EvalInputs, cfg: EvaluateConfig) -> dict[str, Any]:
    """The classifier against the policy on its own held-out D_seed pairs, as its export's
    ``metrics.json`` records them (``seed``: distill's held-out split, after calibration). Far
    more pairs than the teacher-labelled held-out pairs the classifier row compares."""
    head = {"key": "classifier_seed", "model": "classifier (held-out D_seed)"}
    metrics = inputs.training.get("classifier")
    if metrics is None:
        return {**head, **_unavailable(f"no readable metrics.json in the classifier export {cfg.classifier}"
                                       if cfg.classifier else "no classifier export is configured")}
    part = metrics.get("seed") if metrics.get("against") != "seed" else metrics
    if not isinstance(part, dict) or not _number(part.get("accuracy")) or not _number(part.get("n")) or not part["n"]:
        return {**head, **_unavailable("the classifier's metrics.json records no held-out D_seed pairs")}
    return _recorded_row(head, part, "the classifier's metrics.json records no ECE on D_seed",
                         "held-out D_seed pairs of distill classifier (seed labels are the policy's)",
                         io.join(cfg.classifier or "", "metrics.json"))


def _heldout_label_rows(inputs: EvalInputs, cfg: EvaluateConfig,
                        shared: pa.Table | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The teacher-label row and the classifier row: held-out pairs (the students' split) the
    teacher labelled and the scores cover (only one side's when the other is missing), a stable
    sample of at most ``max_policy_pairs``, against the policy labels of those pairs."""
    teacher_name = f"teacher ({inputs.teacher_name})" if inputs.teacher_name else "teacher"
    names = (("teacher", teacher_name), ("classifier", "classifier"))

    def unavailable(reason: str) -> tuple[list[dict[str, Any]], None]:
        return [{"key": k, "model": n, **_unavailable(reason)} for k, n in names], None

    if shared is not None:
        pairs, what = shared, "held-out pairs the teacher labelled and the classifier scored"
    elif inputs.teacher is not None:
        pairs, what = _prefixed(inputs.teacher.table, "t_"), "held-out pairs the teacher labelled"
    elif inputs.student is not None:
        pairs, what = _prefixed(inputs.student.table, "s_"), "held-out pairs the classifier scored"
    else:
        return unavailable("no teacher labels and no published precompute scores")
    if not inputs.heldout.known:
        return unavailable(f"the held-out split is unknown: {inputs.heldout.reason or 'no student export was read'}")
    compared = pairs.num_rows
    held = inputs.heldout.mask(pairs.column("member_id").to_pylist(), pairs.column("job_id").to_pylist())
    pairs = pairs.filter(pa.array(held))
    if pairs.num_rows == 0:
        return unavailable(f"none of the {compared:,} compared pairs is held out from training")
    sampled = pairs.num_rows > cfg.max_policy_pairs
    if sampled:
        order = np.argsort(_hash_unit(_key_column(pairs).to_pylist()), kind="stable")[: cfg.max_policy_pairs]
        pairs = pairs.take(pa.array(np.sort(order), pa.int64()))
    member_ids, job_ids = pairs.column("member_id").to_pylist(), pairs.column("job_id").to_pylist()
    meta: dict[str, Any] = {"compared_pairs": compared, "heldout_pairs": int(held.sum()), "pairs": pairs.num_rows,
                            "sampled": sampled, "rules": inputs.heldout.rules}
    policy: list[str | None] | dict[str, Any]
    if inputs.member_ds is None or inputs.job_ds is None:
        policy = _unavailable("no members or jobs table was found, so the policy labels cannot be computed")
    else:
        policy = policy_labels(inputs, member_ids, job_ids)
        meta["policy_unknown"] = sum(1 for x in policy if x is None)
        if meta["policy_unknown"] == len(policy):
            policy = _unavailable("no held-out pair's member and job rows were found in the members and jobs tables")

    t_labels = pairs.column("t_fit_label").to_pylist() if "t_fit_label" in pairs.column_names else None
    s_labels = pairs.column("s_fit_label").to_pylist() if "s_fit_label" in pairs.column_names else None
    rows: list[dict[str, Any]] = []
    if t_labels is None:
        rows.append({"key": "teacher", "model": teacher_name, **_unavailable("no teacher labels")})
    else:
        t_probs = _probs(pairs, "t_")
        rows.append(_model_row("teacher", teacher_name, what, t_labels, policy, None,
                               t_probs if t_probs is not None else _unavailable("the teacher labels carry no probabilities"),
                               cfg))
    if s_labels is None:
        reason = ("no published precompute scores" if inputs.student is None
                  else "the teacher labels and the scores share no (member_id, job_id) pair")
        rows.append({"key": "classifier", "model": "classifier", **_unavailable(reason)})
    else:
        s_probs = _probs(pairs, "s_")
        rows.append(_model_row("classifier", "classifier", what, s_labels, policy,
                               t_labels if t_labels is not None else _unavailable("no teacher labels"),
                               s_probs if s_probs is not None else _unavailable("the scores carry no probabilities"),
                               cfg))
    return rows, meta


def _explainer_row(judged: list[dict[str, Any]], explanations: dict[str, Any], cfg: EvaluateConfig) -> dict[str, Any]:
    """The label each judged held-out explanation states (:func:`lantern_batch.quality.stated_labels`:
    exactly one), against the policy's and the teacher's label of its pair."""
    head = {"key": "explainer", "model": "explainer (stated label)"}
    if not judged:
        return {**head, **_unavailable(explanations.get("reason") or "no held-out explanation was judged")}
    stated, counts = m.explanation_labels([row["student_explanation"] for row in judged])
    if not counts["stated"]:
        return {**head, **_unavailable(f"none of the {len(judged):,} judged explanations states a single fit label "
                                       f"({counts['none']:,} state none, {counts['several']:,} several)")}
    policy: list[str | None] | dict[str, Any] = [row["policy_label"] for row in judged]
    if all(x is None for x in policy):
        policy = _unavailable("no judged pair's member and job rows were found, so the policy labels cannot be computed")
    return _model_row("explainer", head["model"], "held-out pairs with a published explanation (those judged)",
                      stated, policy, [row["teacher_label"] for row in judged], None, cfg,
                      judged=len(judged), no_label=counts["none"], several_labels=counts["several"])


def _calibration_before_after(inputs: EvalInputs, cfg: EvaluateConfig, calibration: dict[str, Any]) -> dict[str, Any]:
    """The classifier's ECE before and after temperature calibration as its export's
    ``metrics.json`` records them (``uncalibrated.ece`` and ``ece``: distill's held-out split and
    bins); when it records no pair of them, the reason and the report's own ECE (the published
    scores against the teacher)."""
    metrics = inputs.training.get("classifier")
    uncalibrated = (metrics or {}).get("uncalibrated")
    # The held-out D_seed pairs (policy labels) when both sides record them: the temperature is
    # fitted on those (distill's calibrate_on: seed); else the export's main split.
    pick, pick_before, against = metrics, uncalibrated, None
    if isinstance((metrics or {}).get("seed"), dict) and isinstance((uncalibrated or {}).get("seed"), dict):
        pick, pick_before, against = metrics["seed"], uncalibrated["seed"], "D_seed (policy)"
    before = pick_before.get("ece") if isinstance(pick_before, dict) else None
    after = (pick or {}).get("ece")
    if _number(before) and _number(after):
        if against is None:
            against = metrics.get("against") if isinstance(metrics.get("against"), str) else None
        return {"available": True, "from": io.join(cfg.classifier or "", "metrics.json"),
                "before": float(before), "after": float(after),
                "temperature": metrics.get("calibration_temperature") if _number(metrics.get("calibration_temperature")) else None,
                "n": int(pick["n"]) if _number(pick.get("n")) else None, "against": against}
    if metrics is None:
        reason = (f"no readable metrics.json in the classifier export {cfg.classifier}" if cfg.classifier
                  else "no classifier export is configured")
    else:
        reason = "the classifier's metrics.json records no ECE before and after temperature calibration (uncalibrated.ece, ece)"
    out = _unavailable(reason)
    if calibration.get("available"):
        out.update({"report_ece": calibration["ece"], "report_n": calibration["pairs"]})
    return out


def _model_results(inputs: EvalInputs, cfg: EvaluateConfig, shared: pa.Table | None,
                   judged: list[dict[str, Any]], res: dict[str, Any]) -> dict[str, Any]:
    """``results["models"]``: the first screen's table (one row per model: n, agreement with the
    policy and with the teacher, macro-F1 against the policy, ECE) and the classifier's
    calibration before and after temperature scaling."""
    label_rows, heldout = _heldout_label_rows(inputs, cfg, shared)
    rows = [_sft_row(inputs, cfg, "before"), _sft_row(inputs, cfg, "after"), *label_rows,
            _classifier_seed_row(inputs, cfg), _explainer_row(judged, res.get("explanations") or {}, cfg)]
    return {"rows": rows, "heldout": heldout,
            "calibration": _calibration_before_after(inputs, cfg, res.get("calibration") or {})}


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
    """``metrics.json``: every number of the report; explanation text left out (the worst and the
    good explanations keep their ids, labels and reasons)."""
    numbers = {k: v for k, v in results.items() if k != "examples"}
    for key in PAIR_LISTS:
        if key in numbers:
            numbers[key] = [{k: v for k, v in row.items() if k not in TEXT_FIELDS} for row in numbers[key]]
    return json.dumps(numbers, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
