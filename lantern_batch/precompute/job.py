"""``lantern-batch precompute``: the nightly job that scores every candidate pair and publishes
``OUTPUT/scores/ds=…/`` and ``OUTPUT/errors/ds=…/``.

    lantern-batch precompute --config configs/demo_precompute.yaml
    lantern-batch precompute --pairs s3://bucket/world/pairs --out s3://bucket/precompute --ds 2026-11-24

Order of work, and why:

1. Inputs are checked from Parquet footers (a missing required column fails here, exit 2,
   before Ray starts); model references are resolved.
2. The ds lock is taken (one run per ds; a crashed run's lock goes stale after ``lock.ttl_s``),
   then Ray is started or joined.
3. The newest published ds up to this one is the *previous* partition: its unchanged pairs are
   reused.
4. The pipeline (:mod:`lantern_batch.precompute.pipeline`) writes run-unique part files directly
   into the partition directories; the quality gate's canary is scored meanwhile and checked
   before the classifier runs (exit 3, nothing published, the reason logged and written to
   ``OUTPUT/_runs/<run_id>/quality_gate.json``).
5. Publish (:func:`lantern_batch.io.publish_partition`): the errors partition, then the
   scores partition (the run's ``_manifest-<run>.json``, then ``_SUCCESS`` naming the run: the
   switch), then ``scores/_LATEST`` (forward only, compare-and-set). A run that fails deletes
   its files that no manifest lists and no ``_SUCCESS`` names; an error after the switch
   deletes nothing. A killed run's files are garbage-collected by the next publish. Readers
   that follow ``_SUCCESS`` to the live manifest never see them.

Exit codes: 0 published, 1 other failure, 2 bad input or config, 3 blocked by the quality gate.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from lantern_batch import io
from lantern_batch.config import config_hash, write_resolved_config
from lantern_batch.errors import (
    InputError,
    LanternError,
    NotPublishedError,
    QualityGateError,
)
from lantern_batch.logs import event, get_logger
from lantern_batch.precompute import manifest as mf
from lantern_batch.precompute.config import PrecomputeConfig
from lantern_batch.schema import check_files

log = get_logger(__name__)


def new_run_id() -> str:
    """A run id: UTC time plus a random suffix (sorts by time, unique across hosts)."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def input_files(path: str, table_name: str) -> list[str]:
    """Parquet files of an input table, every file's footer checked against the contract.

    Raises:
        InputError: no files, a file that is not Parquet, no rows; SchemaError: a file with a
            missing required column or an unsafe type (the file is named).
    """
    files = io.list_parquet_files(path)
    if not files:
        raise InputError(f"table '{table_name}': no Parquet files found at {path}")
    check_files(table_name, io.file_footers(files, table_name))
    return files


def partition_dirs(scores_base: str) -> list[str]:
    """ds values of the partitions under ``scores_base`` (newest first)."""
    fs, p = io.filesystem(scores_base)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return []
    out = []
    for fi in fs.get_file_info(pafs.FileSelector(p, recursive=False, allow_not_found=True)):
        name = fi.path.rstrip("/").rsplit("/", 1)[-1]
        if fi.type == pafs.FileType.Directory and name.startswith("ds="):
            out.append(name[3:])
    return sorted(out, reverse=True)


def find_previous(scores_base: str, ds: str) -> tuple[str, dict, list[str]] | None:
    """The newest *published* partition with ds ≤ ``ds``: (ds, manifest, files), or None."""
    for cand in partition_dirs(scores_base):
        if cand > ds:
            continue
        try:
            manifest, files = io.published_files(io.join(scores_base, f"ds={cand}"), torn_grace_s=0)
        except NotPublishedError:
            continue
        return cand, manifest, files
    return None


def _find_lantern_error(exc: BaseException) -> LanternError | None:
    """A project error inside a Ray error chain (bad input raised in a worker)."""
    seen = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, LanternError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def _cleanup(directory: str, run_id: str) -> None:
    """Delete what this run wrote into ``directory`` and did not publish (best effort).

    Decided from the partition's state, never from how far the run got: when ``_SUCCESS``
    names this run its publish went through (an error after the switch, in garbage
    collection, ``_LATEST`` or later, changes nothing) and nothing is deleted. Otherwise the
    run's unpublished ``_manifest-<run>.json`` goes first, then those of its part files that no
    remaining manifest lists (:func:`lantern_batch.io.referenced_files`). Any error stops the
    cleanup with a warning: leftovers are garbage-collected by the next publish.
    """
    try:
        if io.live_run_id(directory) == run_id:
            return
        io.delete_file(io.join(directory, io.generation_manifest_name(run_id)))
        referenced = io.referenced_files(directory)
        removed = 0
        for name in io.list_dir(directory):
            if name.startswith(f"part-{run_id}-") and name not in referenced:
                io.delete_file(io.join(directory, name))
                removed += 1
        if removed:
            event(log, "precompute.cleanup", dir=directory, run_id=run_id, removed=removed)
    except Exception as exc:  # noqa: BLE001 - never let cleanup hide the run's own error
        log.warning("precompute.cleanup_failed dir=%s run_id=%s error=%s", directory, run_id,
                    type(exc).__name__)


def run(cfg: PrecomputeConfig) -> int:
    """Run the precompute job; returns the exit code (0 published, 3 gate blocked)."""
    run_id = new_run_id()
    try:
        return _run(cfg, run_id)
    except LanternError:
        raise
    except Exception as exc:  # noqa: BLE001 - unwrap project errors raised inside Ray workers
        found = _find_lantern_error(exc)
        if found is not None:
            raise found from None
        log.exception("precompute.failed run_id=%s error=%s", run_id, type(exc).__name__)
        return 1


def _resolve_models(cfg: PrecomputeConfig) -> dict[str, Any]:
    from lantern_batch import models
    from lantern_batch.precompute.classifier_stage import ClassifierSettings, read_meta
    from lantern_batch.precompute.explainer_stage import ExplainerSettings

    cls_dir = models.resolve(cfg.classifier.ref)
    meta = read_meta(cls_dir)
    classifier = ClassifierSettings.from_config(cfg.classifier, cls_dir, meta)
    explainer = None
    if cfg.explainer.enabled:
        exp_dir = models.resolve(cfg.explainer.ref)
        explainer = ExplainerSettings(
            model_dir=str(exp_dir),
            version="exp-" + models.model_version(exp_dir),
            prompt_version=_explainer_prompt_version(exp_dir),
            engine_kwargs=dict(cfg.explainer.engine_kwargs),
            sampling_params=dict(cfg.explainer.sampling_params),
            max_explanation_chars=cfg.explainer.max_explanation_chars,
            regenerations=cfg.explainer.regenerations,
            retry_sampling_params=dict(cfg.explainer.retry_sampling_params),
            ref=str(cfg.explainer.ref),
        )
    return {"classifier": classifier, "explainer": explainer}


def _explainer_prompt_version(model_dir: Any) -> str:
    """The explainer prompt version an explainer was trained with, from its export's metadata;
    e1 for a model without one (exports before the field, or a plain model)."""
    import json
    from pathlib import Path

    from lantern_batch.models import METADATA_FILE

    path = Path(model_dir) / METADATA_FILE
    meta = json.loads(path.read_text()) if path.is_file() else {}
    return str(meta.get("prompt_version") or "e1")


def _run(cfg: PrecomputeConfig, run_id: str) -> int:
    from lantern_batch.precompute.fingerprints import precompute_fingerprint
    from lantern_batch.precompute.route import Policy

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    ds = cfg.resolved_ds()
    out = cfg.out.rstrip("/")
    scores_base = io.join(out, "scores")
    scores_dir = io.join(scores_base, f"ds={ds}")
    errors_dir = io.join(out, "errors", f"ds={ds}")
    run_dir = io.join(out, "_runs", run_id)

    # 1. Inputs and models, before any work.
    files = {name: input_files(getattr(cfg.inputs, name), name) for name in ("members", "jobs", "pairs")}
    if cfg.quality_gate.canary:
        input_files(cfg.quality_gate.canary, "pairs")
    resolved = _resolve_models(cfg)
    classifier, explainer = resolved["classifier"], resolved["explainer"]
    policy = None
    if explainer is not None:
        p = cfg.explainer.policy
        policy = Policy(tuple(p.labels), p.top_n_per_member, p.sample_rate, p.seed)
    fp = precompute_fingerprint(cfg, classifier, explainer)
    run_fp, versions, fp_settings = fp.run, fp.models, fp.settings
    rows_in = _count_rows(files["pairs"])
    timings["inputs"] = time.perf_counter() - t0
    event(log, "precompute.start", run_id=run_id, ds=ds, pairs=rows_in, pair_files=len(files["pairs"]),
          classifier=classifier.version, explainer=versions["explainer"] or "off")

    from lantern_batch.runtime import init_ray

    # The lock first: a second run of the same ds fails before it starts Ray.
    with io.LockKeeper(io.join(out, "scores", "_locks", f"ds={ds}.lock"), owner=run_id, ttl_s=cfg.lock.ttl_s,
                       wait_s=cfg.lock.wait_s, what=f"precompute ds={ds}") as keeper:
        try:
            init_ray(cfg.ray)
            write_resolved_config(cfg, run_dir)
            previous = find_previous(scores_base, ds) if cfg.incremental else None
            prev_files = previous[2] if previous else []
            prev_manifest = previous[1] if previous else None
            if previous:
                event(log, "precompute.previous", ds=previous[0], run_id=prev_manifest.get("run_id"),
                      files=len(prev_files))
            result = _pipeline(cfg, run_id, ds, files, rows_in, prev_files, scores_dir, errors_dir,
                               classifier, explainer, policy, run_fp, timings, run_dir)
            if keeper.lost:
                raise LanternError(f"lost the lock of ds={ds} during the run; not publishing")

            start = time.perf_counter()
            counts = result.counts
            total = counts["rows_scored"] + counts["rows_reused"] + counts["rows_error"]
            if total != rows_in:
                raise LanternError(f"conservation failed: rows_in={rows_in} but scored+reused+error={total}")
            io.publish_partition(errors_dir, result.errors_files, {
                "run_id": run_id, "ds": ds, "rows": counts["rows_error"],
                "errors_by_reason": counts["errors_by_reason"]})
            man = mf.build_manifest(
                run_id=run_id, ds=ds, counts=counts, rows_in=rows_in,
                models={"classifier": {"ref": cfg.classifier.ref, "version": classifier.version},
                        "explainer": ({"ref": cfg.explainer.ref, "version": explainer.version}
                                      if explainer else None)},
                fingerprints={"run": run_fp, **fp_settings},
                config_hash=config_hash(cfg),
                timings=timings,
                stages={**result.stages, "join_strategy": result.join_strategy_used,
                        "explainer_engine_started": result.explainer_started},
                previous=({"ds": previous[0], "run_id": prev_manifest.get("run_id")} if previous else None),
                previous_labels=((prev_manifest.get("labels") or {}).get("counts") if prev_manifest else None),
                members_rejected=result.members_rejected,
                jobs_rejected=result.jobs_rejected,
                quality_gate=result.gate or mf.gate_skipped(),
                errors_dir=errors_dir,
            )
            written = io.publish_partition(scores_dir, result.scores_files, man)
            latest = io.write_latest(scores_base, ds)
            timings["publish"] = time.perf_counter() - start
            timings["total"] = time.perf_counter() - t0
            io.write_text(io.join(run_dir, "summary.json"), mf.dumps({**written, "timings": timings}))
            c = man["counts"]
            event(log, "precompute.published", run_id=run_id, ds=ds, latest=latest, rows_in=rows_in,
                  scored=c["rows_scored"], reused=c["rows_reused"], errors=c["rows_error"],
                  explained=c["explanations_generated"], explain_failed=c["explanations_failed"],
                  files=len(result.scores_files), seconds=round(timings["total"], 1))
            print(f"precompute: published {scores_dir} ({c['rows_published']} rows: "
                  f"{c['rows_scored']} scored, {c['rows_reused']} reused; {c['rows_error']} errors; "
                  f"{c['explanations_generated']} explanations generated, "
                  f"{c['explanations_failed']} failed)")
            return 0
        except BaseException:
            # Whatever failed (Ctrl-C included), delete only what no manifest lists and no
            # _SUCCESS names: a partition this run has already switched to stays whole.
            _cleanup(scores_dir, run_id)
            _cleanup(errors_dir, run_id)
            raise


def _count_rows(files: list[str]) -> int:
    from lantern_batch.precompute.pipeline import count_rows

    return count_rows(files)


def _pipeline(cfg, run_id, ds, files, rows_in, prev_files, scores_dir, errors_dir, classifier,
              explainer, policy, run_fp, timings, run_dir):
    import ray

    from lantern_batch.forget.tombstones import load_filter as load_forget_filter
    from lantern_batch.precompute.pipeline import Pipeline, PipelineSpec
    from lantern_batch.schema import RowLimits

    limits = RowLimits(cfg.validation.max_text_chars, cfg.validation.max_list_items)
    gate_ref = None
    gate_check = None
    if cfg.quality_gate.canary:
        qg = cfg.quality_gate
        gate = {"canary": qg.canary, "members": qg.members or cfg.inputs.members,
                "jobs": qg.jobs or cfg.inputs.jobs, "min_agreement": qg.min_agreement,
                "min_pairs": qg.min_pairs, "max_pairs": qg.max_pairs}
        refs = [ray.remote(mf.canary_agreement).options(
            num_cpus=cfg.classifier.num_cpus, num_gpus=cfg.classifier.num_gpus).remote(gate, classifier, limits)]
        if explainer is not None and qg.explanation_pairs:
            from lantern_batch.precompute.explainer_stage import canary_explanations

            explain_gate = {**gate, "pairs": qg.explanation_pairs, "min_valid_rate": qg.min_explanation_valid_rate,
                            "min_consistency": qg.min_explanation_consistency,
                            "member_tokens": cfg.explainer.member_tokens, "job_tokens": cfg.explainer.job_tokens}
            refs.append(ray.remote(canary_explanations).options(
                num_cpus=cfg.explainer.num_cpus, num_gpus=cfg.explainer.num_gpus).remote(explain_gate, explainer, limits))
        gate_ref = ray.remote(mf.combine_gate_reports).options(num_cpus=0).remote(*refs)

        def gate_check(report: dict) -> None:
            event(log, "precompute.quality_gate", status=report["status"], agreement=report.get("agreement"),
                  pairs=report.get("pairs"), threshold=report.get("min_agreement"),
                  explanation_valid_rate=(report.get("explanations") or {}).get("valid_rate"),
                  explanation_consistency=(report.get("explanations") or {}).get("consistency"))
            if report["status"] != "passed":
                io.write_text(io.join(run_dir, "quality_gate.json"), mf.dumps(report))
                raise QualityGateError(f"quality gate failed for ds={ds}: {report['reason']}; "
                                       "nothing was published")

    spec = PipelineSpec(
        run_id=run_id, ds=ds, member_files=files["members"], job_files=files["jobs"],
        pair_files=files["pairs"], rows_in=rows_in, prev_files=prev_files, scores_dir=scores_dir,
        errors_dir=errors_dir, classifier=classifier, explainer=explainer, policy=policy, run_fp=run_fp,
        limits=limits, incremental=cfg.incremental, rows_per_partition=cfg.shuffle.rows_per_partition,
        rows_per_file=cfg.rows_per_file, join_strategy=cfg.join.strategy,
        broadcast_max_bytes=cfg.join.broadcast_max_bytes, join_partitions=cfg.join.num_partitions,
        classifier_resources={"batch_size": cfg.classifier.rows_per_call,
                              "concurrency": cfg.classifier.concurrency,
                              "num_cpus": cfg.classifier.num_cpus, "num_gpus": cfg.classifier.num_gpus},
        explainer_resources={"batch_size": cfg.explainer.batch_size, "concurrency": cfg.explainer.concurrency,
                             "num_cpus": cfg.explainer.num_cpus, "num_gpus": cfg.explainer.num_gpus,
                             "max_restarts": cfg.explainer.max_restarts,
                             "max_task_retries": cfg.explainer.max_task_retries,
                             "member_tokens": cfg.explainer.member_tokens, "job_tokens": cfg.explainer.job_tokens},
        gate_ref=gate_ref, gate_check=gate_check, timings=timings,
        forgotten=load_forget_filter(cfg.out, cfg.tombstones),
    )
    return Pipeline(spec).run()
