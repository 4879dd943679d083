"""``lantern-batch synthesize``: label member-job pairs with one or more teachers.

    lantern-batch synthesize --config configs/demo_synthesize.yaml
    lantern-batch synthesize --config configs/demo_synthesize.yaml --out runs/x --set vllm.batch_size=16

One Ray Data pipeline per teacher, each streaming::

    read pairs (row groups) -> validate + de-duplicate + broadcast-join (PairJoiner actors)
      -> teacher stage (vLLM / engagement / black-box actors) -> commit writer (tasks)

Before it, the pass scans the pair keys in shards (Ray tasks, :func:`scan_pass`; see
:mod:`~lantern_batch.teacher.inputs`) for later copies and the rows it skips, and leaves the
decisions as plan files under ``OUT/_scan/`` that the join reads batch by batch. The driver only
sees counts and per-batch summaries (counts and token totals), which it turns into progress
lines and the run summary. After the last teacher, several teachers' labels are
fused (:mod:`~lantern_batch.teacher.fusion`). See :mod:`~lantern_batch.teacher.store` for the
output layout and the exactly-once rules that make a killed run resumable.

A resumed pass skips only what still holds: pairs this teacher labelled from the same member
and job content and query, with the same model (content hash), prompt version and output
settings (:func:`teacher_version`). Before it labels anything, the rows that no longer hold are
taken out of the output (:func:`~lantern_batch.teacher.store.retire_stale`), so a teacher's
labels of one prompt version come from one model and one set of settings, and a changed pair
has one label: the new one.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa

from lantern_batch import io
from lantern_batch.config import config_hash, write_resolved_config
from lantern_batch.logs import Progress, event, get_logger
from lantern_batch.schema import RowLimits
from lantern_batch.teacher import store
from lantern_batch.teacher.config import SynthesizeConfig, TeacherSpec
from lantern_batch.teacher.parsing import INVALID_PREFIX
from lantern_batch.teacher.records import split_labeled

log = get_logger(__name__)

SUMMARY_SCHEMA = pa.schema([
    ("rows", pa.int64()), ("labelled", pa.int64()), ("teacher_errors", pa.int64()),
    ("input_errors", pa.int64()), ("prompt_tokens", pa.int64()), ("output_tokens", pa.int64()),
    ("cached_tokens", pa.int64()), ("retried", pa.int64()), ("labelled_first_try", pa.int64()),
    ("probs_fallback", pa.int64()), ("cache_hits", pa.int64()), ("reasons", pa.string()),
])


def commit_writer(batch: pa.Table, out: str, teacher: str, prompt_version: str,
                  teacher_version: str | None = None) -> pa.Table:
    """Ray Data UDF (task): commit one batch of LABELED rows; return its one-row summary."""
    if batch.num_rows == 0:
        return SUMMARY_SCHEMA.empty_table()
    labels, errors = split_labeled(batch)
    stages = batch.column("_err_stage").to_pylist()
    reasons = batch.column("_err_reason").to_pylist()
    markers = store.marker_rows(batch.column("_row_key").to_pylist(), stages, reasons,
                                batch.column("_prompt_tokens").to_pylist(), batch.column("_output_tokens").to_pylist(),
                                input_fingerprints=batch.column("input_fingerprint").to_pylist(),
                                teacher_version=teacher_version)
    store.commit_batch(out, teacher, prompt_version, labels, errors, markers)
    n_input = sum(s in store.INPUT_STAGES for s in stages)
    retried = batch.column("_retried").to_pylist()

    def total(col: str) -> int:
        return int(pa.compute.sum(batch.column(col)).as_py() or 0)

    return pa.Table.from_pylist([{
        "rows": batch.num_rows,
        "labelled": labels.num_rows,
        "teacher_errors": errors.num_rows - n_input,
        "input_errors": n_input,
        "prompt_tokens": total("_prompt_tokens"),
        "output_tokens": total("_output_tokens"),
        "cached_tokens": total("_cached_tokens"),
        "retried": sum(map(bool, retried)),
        "labelled_first_try": sum(s is None and not r for s, r in zip(stages, retried, strict=True)),
        "probs_fallback": int(sum(x is False for x in batch.column("_probs_from_logprobs").to_pylist())),
        "cache_hits": int(sum(bool(x) for x in batch.column("_cache_hit").to_pylist())),
        "reasons": json.dumps(Counter(r for r in reasons if r is not None)),
    }], schema=SUMMARY_SCHEMA)


def output_settings(cfg: SynthesizeConfig, teacher: TeacherSpec) -> dict[str, Any]:
    """The settings of a teacher pass that change its labels (part of :func:`teacher_version`).

    Prompt budgets and the output schema's cap for every kind; for ``vllm`` the sampling
    parameters as the stage merges them, the retry's, structured-output options, the top-k kept
    and the engine arguments that change outputs
    (:data:`~lantern_batch.precompute.fingerprints.ENGINE_OUTPUT_KEYS`); for ``openai`` the
    request, what is sent and how probabilities are read. Batch sizes, concurrency, resources
    and sampling of pairs change which pairs or how fast, not a label.
    """
    from lantern_batch.precompute.fingerprints import engine_output_settings

    out: dict[str, Any] = {"kind": teacher.kind, "prompt": cfg.prompt.model_dump()}
    if teacher.kind == "vllm":
        v = cfg.vllm
        sampling = {**v.sampling_params, **teacher.sampling_params}
        out.update(sampling_params=sampling, retry_sampling_params={**sampling, **v.retry_sampling_params},
                   retry_keeps_label=v.retry_keeps_label,
                   **({"retries": v.retries} if v.retries != 1 else {}),  # 1: as before the field
                   structured_outputs=dict(v.structured_outputs), topk=cfg.topk,
                   engine=engine_output_settings({**v.engine_kwargs, **teacher.engine_kwargs}))
    elif teacher.kind == "openai":
        o = cfg.openai
        out.update(request_kwargs={**o.request_kwargs, **teacher.sampling_params}, json_schema=o.json_schema,
                   top_logprobs=o.top_logprobs, redact=o.redact, member_fields=list(o.member_fields),
                   job_fields=list(o.job_fields))
    return out


def model_version_of(teacher: TeacherSpec, side: dict[str, Any]) -> str:
    """The teacher's model version: the content hash of a ``vllm`` model's directory
    (:func:`lantern_batch.models.model_version`), the fitted engagement model's own hash, and
    for a black-box endpoint the served model's name (all that is known of it)."""
    if teacher.kind == "vllm":
        from lantern_batch.models import model_version, resolve

        return model_version(resolve(teacher.model))
    if teacher.kind == "engagement":
        return str(side["engagement_model"]["model_ref"])
    return f"openai:{teacher.model}"


def teacher_version(cfg: SynthesizeConfig, teacher: TeacherSpec, side: dict[str, Any]) -> str:
    """:func:`lantern_batch.teacher.store.teacher_version` of one teacher of this run."""
    return store.teacher_version(model_version_of(teacher, side), teacher.prompt_version,
                                 output_settings(cfg, teacher))


def _teacher_stage(cfg: SynthesizeConfig, teacher: TeacherSpec, side: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """(UDF class, map_batches kwargs) of a teacher's stage."""
    if teacher.kind == "vllm":
        from lantern_batch.teacher.vllm_stage import VLLMTeacher

        v = cfg.vllm
        remote = {"max_restarts": v.max_restarts, "max_task_retries": v.max_task_retries, **v.ray_remote_args}
        return VLLMTeacher, dict(
            fn_constructor_kwargs=dict(teacher=teacher.model_dump(), vllm_cfg=v.model_dump(),
                                       prompt=cfg.prompt.model_dump(), topk=cfg.topk),
            batch_size=v.batch_size, concurrency=v.concurrency, num_cpus=v.num_cpus,
            **({"num_gpus": v.num_gpus} if v.num_gpus else {}), **remote,
        )
    if teacher.kind == "engagement":
        from lantern_batch.teacher.engagement import EngagementTeacher

        return EngagementTeacher, dict(
            fn_constructor_kwargs=dict(teacher=teacher.model_dump(), model=side["engagement_model"]),
            batch_size=cfg.join_batch_size, concurrency=1, num_cpus=0.5,
        )
    from lantern_batch.teacher.blackbox import BlackBoxTeacher

    o = cfg.openai
    # The endpoint and key come from the driver's environment (where the job was launched) and
    # reach the client actors through their runtime environment, never through the config.
    env = {k: os.environ[k] for k in (o.base_url_env, o.api_key_env) if k in os.environ}
    return BlackBoxTeacher, dict(
        fn_constructor_kwargs=dict(teacher=teacher.model_dump(), openai_cfg=o.model_dump(),
                                   prompt=cfg.prompt.model_dump(),
                                   cache_dir=io.join(cfg.out, "cache", f"teacher={teacher.name}")),
        batch_size=o.batch_size, concurrency=o.actors, num_cpus=0.5,
        max_restarts=cfg.vllm.max_restarts, max_task_retries=cfg.vllm.max_task_retries,
        **({"runtime_env": {"env_vars": env}} if env else {}),
    )


def _stream(cfg: SynthesizeConfig, teacher: TeacherSpec, side: dict[str, Any], tasks: list[Any],
            plan: Any, to_do: int, totals: Counter[str], reasons: Counter[str], version: str) -> None:
    """Build and consume one teacher's Ray Data pipeline, summing its batch summaries."""
    import ray
    import ray.data

    from lantern_batch.teacher.inputs import PairJoiner, read_pairs_batch

    limits = RowLimits(cfg.validation.max_text_chars, cfg.validation.max_list_items)
    ds = ray.data.from_items([t.__dict__ for t in tasks], override_num_blocks=max(1, len(tasks)))
    ds = ds.map_batches(read_pairs_batch, batch_size=1, batch_format="pyarrow", num_cpus=0.25)
    if side.get("forgotten") is not None:  # tombstoned members: skipped, counted by _scan
        from lantern_batch.forget.tombstones import drop_forgotten_pairs

        ds = ds.map_batches(drop_forgotten_pairs, batch_format="pyarrow", num_cpus=0.25,
                            fn_kwargs={"forgotten": [side["forgotten"]]})
    ds = ds.map_batches(
        PairJoiner,
        fn_constructor_kwargs=dict(
            members=side["members"], jobs=side["jobs"], bad_members=side["bad_members"],
            bad_jobs=side["bad_jobs"], copy_index=None, skip_keys=None,
            sample_fraction=cfg.sample_fraction, limits=limits, plan=plan),
        batch_size=cfg.join_batch_size, batch_format="pyarrow", concurrency=cfg.join_actors, num_cpus=0.25,
    )
    stage_cls, stage_kwargs = _teacher_stage(cfg, teacher, side)
    # Ray Data merges a task's outputs into blocks of up to 128 MiB, so without this a whole
    # row group of pairs would reach the engine as one task whose labels appear only when it
    # ends. Blocks of one engine batch make each batch its own task: labels stream to the
    # writer, progress moves per batch, and a killed run loses at most the batches in flight.
    ds = ds.repartition(target_num_rows_per_block=stage_kwargs["batch_size"])
    ds = ds.map_batches(stage_cls, batch_format="pyarrow", **stage_kwargs)
    # One committed file set per engine batch: small enough that a killed run loses little.
    ds = ds.map_batches(commit_writer, batch_size=stage_kwargs["batch_size"], batch_format="pyarrow", num_cpus=0.25,
                        fn_kwargs=dict(out=cfg.out, teacher=teacher.name, prompt_version=teacher.prompt_version,
                                       teacher_version=version))

    progress = Progress(log, f"synthesize.{teacher.name}", total=to_do)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            reasons.update(json.loads(row.pop("reasons")))
            totals.update(row)
            progress.update(row["rows"])


def _scan(tasks: list[Any], sample_fraction: float, inputs_done: frozenset[str], done: dict[str, str],
          member_hashes: dict[str, str], job_hashes: dict[str, str], forgotten: Any = None) -> tuple[Any, ...]:
    """The whole scan in one process, in memory (:func:`~lantern_batch.teacher.inputs.scan_pairs`):
    (copy index, keys to skip, changed done keys, counts), the counts with ``forgotten``: the
    pairs of tombstoned members this pass skips (sampled, not skipped as done). For tests and
    small tables; a pass runs :func:`_scan_shard` per shard."""
    from lantern_batch.teacher.inputs import scan_pairs

    result = scan_pairs(tasks, sample_fraction, inputs_done, done, member_hashes, job_hashes, forgotten)
    copy_index, skip, changed = result.pop("copy_index"), result.pop("skip"), result.pop("changed")
    return copy_index, skip, changed, result


def _scan_shard(tasks: list[Any], shard: int, shards: int, sample_fraction: float, out: str, teacher: str,
                prompt_version: str, version: str, resume: bool, member_hashes: dict[str, str],
                job_hashes: dict[str, str], forgotten: Any, plan_dir: str) -> dict[str, Any]:
    """Ray task: scan one shard of the pairs (:func:`~lantern_batch.teacher.inputs.scan_shard`)
    with the done rows of that shard (:func:`~lantern_batch.teacher.store.load_done_shard`),
    write its plan files (:func:`~lantern_batch.teacher.inputs.write_plan`); return its counts,
    the files and what it held."""
    from lantern_batch.teacher.inputs import scan_shard, write_plan

    done, where, inputs_done = (store.load_done_shard(out, teacher, prompt_version, version, shard, shards)
                                if resume else ({}, {}, frozenset()))
    scan = scan_shard(tasks, sample_fraction, shard=shard, shards=shards, inputs_done=inputs_done, done=done,
                      where=where, member_hashes=member_hashes, job_hashes=job_hashes, forgotten=forgotten)
    return {**scan.counts, **write_plan(scan, plan_dir), "held": scan.held}


def plan_dir(out: str, teacher: str) -> str:
    """Where a pass of ``teacher`` keeps its scan plan (deleted when the pass ends, and before
    the next pass of that teacher, if a killed run left one)."""
    return io.join(out, "_scan", f"teacher={teacher}")


def scan_pass(cfg: SynthesizeConfig, teacher: TeacherSpec, side: dict[str, Any], tasks: list[Any],
              version: str) -> tuple[dict[str, int], Any]:
    """Scan the pairs for one pass in shards (Ray tasks, see
    :mod:`~lantern_batch.teacher.inputs`): (counts summed over the shards, the
    :class:`~lantern_batch.teacher.inputs.ScanPlan`)."""
    import ray

    from lantern_batch.teacher.inputs import ScanPlan, shard_count

    directory = plan_dir(cfg.out, teacher.name)
    io.delete_dir(directory)
    shards = shard_count(tasks, cfg.shard_rows)
    task = ray.remote(_scan_shard).options(num_cpus=0.5)
    tasks_ref = ray.put(tasks)
    results = ray.get([task.remote(tasks_ref, b, shards, cfg.sample_fraction, cfg.out, teacher.name,
                                   teacher.prompt_version, version, cfg.resume, side["member_hashes"],
                                   side["job_hashes"], side.get("forgotten"), directory) for b in range(shards)])
    counts: Counter[str] = Counter()
    for r in results:
        counts.update({k: v for k, v in r.items() if isinstance(v, int)})
    plan = ScanPlan(decisions=tuple(r["decisions"] for r in results if r["decisions"]),
                    changed=tuple(r["changed"] for r in results if r["changed"]))
    event(log, "teacher.scan", teacher=teacher.name, shards=shards,
          held_pairs_max=max(r["held"]["pairs"] for r in results),
          held_done_max=max(r["held"]["done"] for r in results))
    keys = ("rows_in", "duplicates", "not_sampled", "skipped_done", "changed_done", "forgotten")
    return {k: counts[k] for k in keys}, plan


def run_teacher(cfg: SynthesizeConfig, teacher: TeacherSpec, side: dict[str, Any],
                tasks: list[Any]) -> dict[str, Any]:
    """One teacher pass over the pairs; returns its counts (this run only)."""
    import ray

    t0 = time.perf_counter()
    version = teacher_version(cfg, teacher, side)
    # The done rows, the later copies and the rows to skip are decided in shards (Ray tasks,
    # each holding its shard only) and kept as plan files; the driver only sees counts.
    try:
        scan, plan = scan_pass(cfg, teacher, side, tasks, version)
        retired = {"rows": 0, "batches": 0}
        if cfg.resume:  # before any new label: what no longer holds leaves the output
            retired = ray.get(ray.remote(store.retire_stale).options(num_cpus=0.5).remote(
                cfg.out, teacher.name, teacher.prompt_version, version, changed_files=plan.changed))
        to_do = scan["rows_in"] - scan["not_sampled"] - scan["skipped_done"] - scan["forgotten"]
        event(log, "teacher.pass_start", teacher=teacher.name, kind=teacher.kind, version=version,
              rows_in=scan["rows_in"], to_do=to_do, skipped_done=scan["skipped_done"],
              changed_done=scan["changed_done"], retired=retired["rows"], not_sampled=scan["not_sampled"],
              duplicates=scan["duplicates"], forgotten=scan["forgotten"])

        totals: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        if to_do > 0:  # an all-done pass starts no engine
            _stream(cfg, teacher, side, tasks, plan, to_do, totals, reasons, version)
    finally:
        io.delete_dir(plan_dir(cfg.out, teacher.name))
    seconds = time.perf_counter() - t0
    counts = {
        "teacher_version": version,
        "rows_in": scan["rows_in"], "duplicates": scan["duplicates"],
        "not_sampled": scan["not_sampled"], "skipped_done": scan["skipped_done"],
        "changed_done": scan["changed_done"], "retired": retired["rows"],
        "forgotten": scan["forgotten"],
        "processed": totals["rows"], "labelled": totals["labelled"],
        "teacher_errors": totals["teacher_errors"], "input_errors_written": totals["input_errors"],
        "errors_by_reason": dict(reasons), "retried": totals["retried"],
        "labelled_first_try": totals["labelled_first_try"],
        "probs_fallback": totals["probs_fallback"], "cache_hits": totals["cache_hits"],
        "prompt_tokens": totals["prompt_tokens"],
        "output_tokens": totals["output_tokens"], "cached_tokens": totals["cached_tokens"],
        "seconds": round(seconds, 2),
        "rows_per_s": round(totals["rows"] / seconds, 3) if seconds else None,
        "output_tokens_per_s": round(totals["output_tokens"] / seconds, 2) if seconds else None,
        "prefix_cache_hit_rate": (round(totals["cached_tokens"] / totals["prompt_tokens"], 4)
                                  if totals["prompt_tokens"] else None),
    }
    # What share of the teacher's outputs could be trained on, and why the rest could not.
    judged = counts["labelled"] + counts["teacher_errors"]
    counts["valid_rate"] = round(counts["labelled"] / judged, 4) if judged else None
    counts["valid_first_try_rate"] = round(counts["labelled_first_try"] / judged, 4) if judged else None
    invalid: Counter[str] = Counter()
    for reason, n in reasons.items():
        if reason.startswith(INVALID_PREFIX):
            invalid.update({r: n for r in reason[len(INVALID_PREFIX):].split("+")})
    counts["invalid_by_reason"] = dict(invalid.most_common())
    # Every row this pass read is accounted for exactly once.
    counts["conserved"] = counts["rows_in"] == (counts["processed"] + counts["not_sampled"] + counts["skipped_done"]
                                                + counts["forgotten"])
    event(log, "teacher.pass_done", teacher=teacher.name, **{k: v for k, v in counts.items() if not isinstance(v, dict)})
    return counts


def prepare_side_tables(cfg: SynthesizeConfig) -> dict[str, Any]:
    """Validate members and jobs in Ray tasks; object refs of the good rows (never in the driver)."""
    import ray

    from lantern_batch.teacher.inputs import content_index, prepare_side_table

    limits = RowLimits(cfg.validation.max_text_chars, cfg.validation.max_list_items)
    task = ray.remote(prepare_side_table).options(num_returns=3, num_cpus=0.5)
    members, bad_members, m_counts = task.remote(cfg.inputs.members, "members", limits, store.errors_dir(cfg.out))
    jobs, bad_jobs, j_counts = task.remote(cfg.inputs.jobs, "jobs", limits, store.errors_dir(cfg.out))
    counts = {"members": ray.get(m_counts), "jobs": ray.get(j_counts)}
    # Content hashes of the good rows: the scan computes each pair's input_fingerprint from them.
    index = ray.remote(content_index).options(num_cpus=0.5)
    member_hashes, job_hashes = index.remote(members, "members"), index.remote(jobs, "jobs")
    event(log, "synthesize.side_tables", members_good=counts["members"]["good"], jobs_good=counts["jobs"]["good"])
    return {"members": members, "jobs": jobs, "bad_members": bad_members, "bad_jobs": bad_jobs, "counts": counts,
            "member_hashes": member_hashes, "job_hashes": job_hashes}


def run(cfg: SynthesizeConfig) -> int:
    """Entry point of ``lantern-batch synthesize``; returns the exit code."""
    from lantern_batch.forget.tombstones import load_filter
    from lantern_batch.teacher.inputs import check_inputs

    t0 = time.perf_counter()
    check_inputs(cfg.inputs.members, cfg.inputs.jobs, cfg.inputs.pairs)  # footers only; exit 2 on a bad schema
    # Tombstoned members (lantern-batch forget) are skipped and counted; exit 2 without the key.
    forgotten = load_filter(cfg.out, cfg.tombstones)
    # One run per output: another run's uncommitted files look like orphans to this one.
    with io.LockKeeper(io.join(cfg.out, "_locks", "synthesize.lock"), owner=f"synthesize-{uuid.uuid4().hex[:12]}",
                       ttl_s=cfg.lock.ttl_s, wait_s=cfg.lock.wait_s, what="synthesize"):
        return _run(cfg, t0, forgotten)


def _run(cfg: SynthesizeConfig, t0: float, forgotten: Any = None) -> int:
    import ray

    from lantern_batch.runtime import init_ray
    from lantern_batch.teacher.inputs import pair_read_tasks

    init_ray(cfg.ray)
    write_resolved_config(cfg, cfg.out)
    orphans = store.clean_orphans(cfg.out)
    if orphans:
        event(log, "synthesize.orphans_deleted", files=len(orphans))
    if not cfg.resume:
        for t in cfg.teachers:
            io.delete_dir(store.commits_dir(cfg.out, t.name, t.prompt_version))
        store.clean_orphans(cfg.out)
    side = prepare_side_tables(cfg)
    side["forgotten"] = ray.put(forgotten) if forgotten else None
    if any(t.kind == "engagement" for t in cfg.teachers):
        from lantern_batch.teacher.engagement import fit_engagement_model

        side["engagement_model"] = ray.get(ray.remote(fit_engagement_model).options(num_cpus=0.5).remote(
            cfg.engagement.model_dump(), cfg.inputs.members, cfg.inputs.jobs))
    tasks = pair_read_tasks(cfg.inputs.pairs)

    passes = {t.name: run_teacher(cfg, t, side, tasks) for t in cfg.teachers}
    fusion = None
    if len(cfg.teachers) == 1:
        store.invalidate_fused(cfg.out)  # an earlier run's fusion of another teacher set
    else:
        from lantern_batch.teacher.fusion import fuse_and_report

        fusion = fuse_and_report(cfg)
    totals = store.output_totals(cfg.out, [(t.name, t.prompt_version) for t in cfg.teachers])
    summary = {
        "command": "synthesize",
        "config_hash": config_hash(cfg),
        "out": cfg.out,
        "seconds": round(time.perf_counter() - t0, 2),
        "orphan_files_deleted": len(orphans),
        "side_tables": side["counts"],
        "passes": passes,
        "output": totals,
        "fusion": fusion,
    }
    rows_in = next(iter(passes.values()))["rows_in"]
    for name, t in totals["teachers"].items():
        t["conserved"] = rows_in == (t["labelled"] + t["errors"] + totals["input_errors"]
                                     + passes[name]["not_sampled"] + passes[name]["forgotten"])
    io.write_text(io.join(cfg.out, "run_summary.json"), json.dumps(summary, indent=2, default=str) + "\n")
    event(log, "synthesize.done", out=cfg.out, seconds=summary["seconds"],
          **{f"labelled_{k}": v["labelled"] for k, v in totals["teachers"].items()},
          **{f"valid_rate_{k}": p["valid_rate"] for k, p in passes.items()},
          **{f"valid_first_try_{k}": p["valid_first_try_rate"] for k, p in passes.items()},
          input_errors=totals["input_errors"])
    return 0
