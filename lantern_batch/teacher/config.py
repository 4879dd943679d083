"""Configs of ``lantern-batch synthesize`` and ``lantern-batch curate export|import``.

A light module (pydantic only): the CLI imports it to parse flags and print ``--dry-run`` plans
without importing Ray or vLLM. Defaults are the local demo's values; settings that only this
2-core CPU machine needs (logical CPUs, a small KV-cache reservation, eager mode, metrics off)
are in ``configs/demo_synthesize.yaml`` and ``RayConfig``, not in code.

    lantern-batch synthesize --config configs/demo_synthesize.yaml --set vllm.batch_size=16
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lantern_batch.config import (
    PATH_COMPONENT_PATTERN,
    ConfigModel,
    InputTables,
    LockConfig,
    RayConfig,
    ValidationConfig,
)
from lantern_batch.prompts import JOB_TOKENS, MEMBER_TOKENS, PROMPT_VERSION

TEACHER_NAME_PATTERN = PATH_COMPONENT_PATTERN


class PromptConfig(ConfigModel):
    """How pairs become teacher prompts (see :mod:`lantern_batch.prompts`)."""

    member_tokens: int = Field(MEMBER_TOKENS, gt=0)
    """Token budget of the member section (approximate: characters / 4)."""
    job_tokens: int = Field(JOB_TOKENS, gt=0)
    """Token budget of the job section; the description is compressed first."""
    max_explanation_chars: int = Field(240, gt=0)
    """``maxLength`` of the explanation in the output JSON schema. With ``max_tokens`` it bounds
    the output so a complete, parseable JSON object is the norm."""
    check_outputs: bool = True
    """Check every parsed output with :func:`lantern_batch.quality.check_explanation` (against
    the pair's member and job) and :func:`~lantern_batch.quality.check_dimension_scores`; an
    invalid output is generated again (``vllm.retries`` times), then becomes an ``invalid_output:<reasons>`` error
    row, never a label. Off only to test the stage's mechanics with an untrained model."""


class VLLMStageConfig(ConfigModel):
    """The vLLM stage: one Ray actor per engine, fed by Ray Data ``map_batches``.

    Engine and sampling settings are passed through to ``vllm.LLM`` / ``vllm.SamplingParams``
    unchanged; see vLLM's engine arguments for what each key does.
    """

    engine_kwargs: dict[str, Any] = Field(default_factory=lambda: {
        "dtype": "auto",
        "max_model_len": 3072,
        "enable_prefix_caching": True,
    })
    """Keyword arguments of ``vllm.LLM`` (``model`` comes from the teacher). CPU machines add
    ``enforce_eager`` and a small ``kv_cache_memory_bytes`` in their config."""
    sampling_params: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 192})
    """Keyword arguments of ``vllm.SamplingParams``. ``logprobs`` and ``structured_outputs`` are
    set by the stage (from ``topk`` and the output schema)."""
    retry_sampling_params: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.7, "seed": 17})
    """Overrides of ``sampling_params`` for a retry of an unparseable or invalid output (greedy
    decoding would repeat the same output); retry ``k`` uses ``seed + k``."""
    retry_keeps_label: bool = True
    """A retry keeps the fit label the rejected output chose (the greedy pass's, the label its
    soft labels favour: the retry's structured-output schema allows that label alone) and
    rewrites the scores and explanation, so retrying fixes text, never the judgement; off: a
    retry samples the label too. Retry sampling that shifts the label's odds (a
    ``repetition_penalty`` also penalises a label the prompt names) needs it on. Outputs
    without a label retry freely; the soft labels are the model's raw logprobs either way."""
    retries: int = Field(1, ge=0)
    """Times an unparseable or invalid output is generated again (each retry with the next
    seed) before the pair becomes an error row; 0: never."""
    structured_outputs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments of ``vllm.sampling_params.StructuredOutputsParams`` besides
    ``json`` (the schema)."""
    batch_size: int = Field(32, gt=0)
    """Rows per ``map_batches`` call into an engine (vLLM batches inside the call too)."""
    concurrency: int = Field(1, gt=0)
    """Engine actors (one per GPU on a cluster)."""
    num_cpus: float = Field(1.0, ge=0)
    """CPUs reserved per engine actor."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per engine actor (1 on a GPU cluster with tensor parallelism 1)."""
    max_restarts: int = Field(2, ge=-1)
    """Times a dead engine actor is restarted (-1: forever)."""
    max_task_retries: int = Field(2, ge=-1)
    """Times a batch is retried on a restarted actor (-1: forever)."""
    ray_remote_args: dict[str, Any] = Field(default_factory=dict)
    """Extra Ray options of the engine actors (``runtime_env``, ``accelerator_type``, ...)."""


class TeacherSpec(ConfigModel):
    """One teacher. Its labels go to ``OUT/labels/teacher=NAME/``."""

    name: str = Field("smollm2", pattern=TEACHER_NAME_PATTERN)
    """Teacher name (a directory name: letters, digits, ``_ . -``)."""
    kind: Literal["vllm", "engagement", "openai"] = "vllm"
    """``vllm``: an open LLM in vLLM actors; ``engagement``: a logistic model of the apply log
    with ordinal calibration on D_seed; ``openai``: a black-box OpenAI-compatible endpoint."""
    model: str = "bundled:smollm2"
    """``vllm``: a model reference (local dir, ``bundled:``, ``s3://``, ``hub:org/name``);
    ``openai``: the served model name; ``engagement``: unused."""
    prompt_version: str = Field(PROMPT_VERSION, pattern=PATH_COMPONENT_PATTERN)
    """Prompt version (``lantern_batch.prompts.PROMPT_VERSIONS``); recorded on every row and a
    directory name under ``OUT/_commits/`` (letters, digits, ``_ . -``)."""
    weight: float = Field(1.0, ge=0)
    """Weight of this teacher's probabilities in the fused soft labels."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """``vllm`` only: merged over ``vllm.engine_kwargs`` for this teacher."""
    sampling_params: dict[str, Any] = Field(default_factory=dict)
    """``vllm``/``openai``: merged over the shared sampling parameters for this teacher."""


class EngagementConfig(ConfigModel):
    """The engagement teacher: P(apply) from pair features, mapped to fit-label probabilities."""

    apply_log: str = "runs/demo/data/apply_log"
    """Apply log (member_id, job_id, applied): the training data of the apply model."""
    seed: str = "runs/demo/data/seed"
    """D_seed: the labels the ordinal calibration is fitted on."""
    max_train_rows: int = Field(200_000, gt=0)
    """Apply-log rows used to fit (a deterministic sample beyond this)."""
    l2: float = Field(1.0, ge=0)
    """L2 penalty of the logistic regression."""


class OpenAIConfig(ConfigModel):
    """The black-box teacher T1: any OpenAI-compatible chat completions endpoint."""

    base_url_env: str = "LANTERN_T1_BASE_URL"
    """Environment variable holding the endpoint's base URL (e.g. ``http://host:8000/v1``)."""
    api_key_env: str = "LANTERN_T1_API_KEY"
    """Environment variable holding the API key (may be unset for a local server)."""
    max_concurrency: int = Field(4, gt=0)
    """Requests in flight at once per actor."""
    actors: int = Field(1, gt=0)
    """Client actors (total concurrency = actors x max_concurrency)."""
    batch_size: int = Field(16, gt=0)
    """Rows per ``map_batches`` call."""
    max_retries: int = Field(5, ge=0)
    """Retries of a request after HTTP 429 / 5xx / connection errors."""
    backoff_s: float = Field(0.5, gt=0)
    """First backoff; doubled per retry with jitter (``Retry-After`` wins when given)."""
    max_backoff_s: float = Field(30.0, gt=0)
    """Longest single backoff."""
    timeout_s: float = Field(120.0, gt=0)
    """Per-request timeout."""
    request_kwargs: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 192})
    """Extra body fields of each chat completion request, passed through."""
    json_schema: bool = True
    """Ask for the output JSON schema via ``response_format`` (``json_schema``)."""
    top_logprobs: int = Field(5, ge=0, le=20)
    """Ask for logprobs (for p_high/p_medium/p_low); 0 falls back to one-hot probabilities."""
    cache: bool = True
    """Cache responses under ``OUT/cache/teacher=NAME/`` keyed by prompt hash (same retention
    as the labels; delete the run's output to delete it)."""
    redact: bool = True
    """Replace e-mail addresses, phone numbers and URLs in free text before sending."""
    member_fields: list[str] = Field(default_factory=lambda: [
        "current_title", "seniority", "years_experience", "skills", "experience", "education",
        "headline", "location",
    ])
    """Member fields sent to the endpoint (others are removed; ``summary`` is not in the default)."""
    job_fields: list[str] = Field(default_factory=lambda: [
        "title", "seniority", "required_skills", "description", "location", "workplace_type",
    ])
    """Job fields sent to the endpoint (others are removed)."""


class FusionConfig(ConfigModel):
    """Fused soft labels over several teachers."""

    temperature: float = Field(1.0, gt=0)
    """Each teacher's probabilities are sharpened (<1) or softened (>1) as p^(1/T), renormalised,
    before the weighted mean."""


class SynthesizeConfig(ConfigModel):
    """Config of ``lantern-batch synthesize`` (defaults: the local demo)."""

    inputs: InputTables = InputTables()
    """Members, jobs and pairs tables."""
    out: str = "runs/demo/synth"
    """Output directory: ``labels/teacher=NAME/``, ``fused/``, ``errors/``, resolved config,
    run summary."""
    ray: RayConfig = RayConfig()
    """Ray connection."""
    validation: ValidationConfig = ValidationConfig()
    """Row limits of input validation."""
    teachers: list[TeacherSpec] = Field(default_factory=lambda: [TeacherSpec()])
    """Teachers to run, in order. With several, ``fused/`` and an agreement report are written."""
    vllm: VLLMStageConfig = VLLMStageConfig()
    """vLLM stage settings shared by ``vllm`` teachers."""
    prompt: PromptConfig = PromptConfig()
    """Prompt budgets and the explanation bound."""
    engagement: EngagementConfig = EngagementConfig()
    """Settings of ``engagement`` teachers."""
    openai: OpenAIConfig = OpenAIConfig()
    """Settings of ``openai`` (black-box) teachers."""
    fusion: FusionConfig = FusionConfig()
    """Fusion of several teachers' soft labels."""
    lock: LockConfig = Field(default_factory=LockConfig)
    """One run per output directory (``OUT/_locks/synthesize.lock``): two runs on one output
    would delete each other's uncommitted files."""
    topk: int = Field(20, ge=0, le=100)
    """Top-k logprobs stored per explanation token (sparse) for token-level KD; 0 stores none."""
    sample_fraction: float = Field(1.0, gt=0, le=1)
    """Label only pairs whose pair-id hash falls below this fraction (deterministic, so a rerun
    selects the same pairs). Others are counted as ``not_sampled``."""
    resume: bool = True
    """Skip pairs this output already has for the same teacher and prompt version."""
    tombstones: str | None = None
    """A central directory of tombstones of forgotten members (``lantern-batch forget``), read
    besides ``OUT/_tombstones``; their pairs are skipped and counted as ``forgotten``."""
    join_batch_size: int = Field(512, gt=0)
    """Pairs per batch of the validate/join stage."""
    join_actors: int = Field(1, gt=0)
    """Actors of the join stage (each holds the broadcast members and jobs)."""
    shard_rows: int = Field(2_000_000, gt=0)
    """Pairs per shard of the input scan (de-duplication, resume and skip decisions): the scan
    runs in ceil(pairs / shard_rows) Ray tasks, each holding one hash bucket of the pairs, so
    its memory is bounded by this, not by the table (``lantern_batch.teacher.inputs``)."""

    SHORTCUTS: ClassVar[dict[str, str]] = {
        "--members": "inputs.members",
        "--jobs": "inputs.jobs",
        "--pairs": "inputs.pairs",
        "--out": "out",
        "--sample-fraction": "sample_fraction",
    }

    @model_validator(mode="after")
    def _unique_teachers(self) -> SynthesizeConfig:
        names = [t.name for t in self.teachers]
        if not names:
            raise ValueError("at least one teacher is required")
        if len(set(names)) != len(names):
            raise ValueError("teacher names must be unique")
        return self

    def plan(self) -> list[str]:
        steps = [
            f"lock {self.out}/_locks/synthesize.lock",
            f"read pairs {self.inputs.pairs}; validate; de-duplicate (first kept)",
            f"validate members {self.inputs.members} and jobs {self.inputs.jobs}; broadcast-join",
        ]
        if self.sample_fraction < 1:
            steps.append(f"keep pairs with hash < {self.sample_fraction}")
        for t in self.teachers:
            what = {"vllm": f"vLLM x{self.vllm.concurrency} model={t.model}",
                    "engagement": "apply-log logistic model + ordinal calibration on D_seed",
                    "openai": f"black-box endpoint ${self.openai.base_url_env} model={t.model}"}[t.kind]
            steps.append(f"teacher {t.name} ({t.kind}, prompt {t.prompt_version}, weight {t.weight}): "
                         f"{what} -> {self.out}/labels/teacher={t.name}/"
                         + (" (resume: skip labelled pairs)" if self.resume else ""))
        if len(self.teachers) > 1:
            steps.append(f"fuse soft labels (T={self.fusion.temperature}) -> {self.out}/fused/ + agreement.json")
        steps.append(f"errors -> {self.out}/errors/; summary -> {self.out}/run_summary.json")
        return steps


class CurateExportConfig(ConfigModel):
    """Config of ``lantern-batch curate export``: a review sheet of teacher labels."""

    labels: str = "runs/demo/synth/labels/teacher=smollm2"
    """Teacher labels to review (one teacher's directory, or ``fused/``)."""
    members: str = "runs/demo/data/members"
    """Members table (for the short member summary on the sheet)."""
    jobs: str = "runs/demo/data/jobs"
    """Jobs table (for the short job summary on the sheet)."""
    out: str = "runs/demo/curation"
    """Output directory: ``review.csv`` and ``review.parquet``."""
    limit: int | None = Field(200, gt=0)
    """Rows on the sheet (a deterministic sample by pair id); None exports every row."""
    summary_chars: int = Field(300, gt=0)
    """Length of the member and job summaries on the sheet."""

    SHORTCUTS: ClassVar[dict[str, str]] = {
        "--labels": "labels", "--members": "members", "--jobs": "jobs", "--out": "out", "--limit": "limit",
    }

    def plan(self) -> list[str]:
        return [f"read {self.labels} (+ member/job summaries)",
                f"write {self.out}/review.csv and review.parquet ({self.limit or 'all'} rows)"]


class CurateImportConfig(ConfigModel):
    """Config of ``lantern-batch curate import``: apply review decisions and write D_seed."""

    review: str = "runs/demo/curation/review.csv"
    """The reviewed sheet (CSV or Parquet, columns as exported)."""
    out: str = "runs/demo/curation/seed"
    """Output directory: ``seed/`` (D_seed rows) and ``rejected/`` (rows with their reason)."""
    source: str = "curated"
    """Value of D_seed's ``source`` column (the teacher name is appended)."""

    SHORTCUTS: ClassVar[dict[str, str]] = {"--review": "review", "--out": "out"}

    def plan(self) -> list[str]:
        return [f"read decisions from {self.review}",
                f"write accepted rows -> {self.out}/seed/, rejected rows -> {self.out}/rejected/"]
