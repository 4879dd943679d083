"""Configs of the distillation jobs (light module: no torch, Ray or transformers imports).

    lantern-batch distill teacher-sft --config configs/demo_distill_teacher_sft.yaml
    lantern-batch distill classifier  --config configs/demo_distill_classifier.yaml
    lantern-batch distill explainer   --config configs/demo_distill_explainer.yaml
    lantern-batch distill chain       --config configs/demo_distill_chain.yaml

Defaults are the local demo's values (CPU, bundled models, everything under ``runs/demo/``).
Each job writes its export to ``out`` (an HF directory plus ``metrics.json`` and the resolved
config), its prepared examples and rejected rows under ``work_dir``, and Ray Train checkpoints
under ``train.storage_path/<train.run_name>``.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lantern_batch.config import PATH_COMPONENT_PATTERN, ConfigModel, InputTables, RayConfig
from lantern_batch.prompts import EXPLAINER_PROMPT_VERSION

_TABLE_SHORTCUTS = {
    "--members": "inputs.members",
    "--jobs": "inputs.jobs",
    "--pairs": "inputs.pairs",
    "--out": "out",
}


class ScalingSettings(ConfigModel):
    """Ray Train ``ScalingConfig``: how many workers and what each one gets."""

    num_workers: int = Field(1, ge=1)
    """Training workers (one process each; data-parallel)."""
    use_gpu: bool = False
    """One GPU per worker (NCCL); False trains on CPU with the gloo backend."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """Logical CPUs Ray reserves per worker."""
    torch_threads: int | None = None
    """Intra-op threads per worker; None: the machine's cores divided by the workers on it
    (2 cores here: 2 threads for one worker, 1 each for two)."""


class DeepSpeedSettings(ConfigModel):
    """DeepSpeed ZeRO for decoder training (explainer, teacher SFT)."""

    enabled: bool = False
    """Wrap the model in a DeepSpeed engine instead of DDP."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """ZeRO stage: 2 shards optimizer state and gradients, 3 also the parameters."""
    offload_optimizer: bool = False
    """Keep optimizer state in CPU memory (``offload_optimizer.device=cpu``)."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Extra DeepSpeed config keys, merged over the generated config (passed through as-is)."""


class TrainSettings(ConfigModel):
    """Optimisation, checkpointing and fault tolerance (shared by every trainer)."""

    epochs: float = Field(1.0, gt=0)
    """Passes over the training examples (fractions allowed: 0.5 = half an epoch)."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (overrides ``epochs`` when smaller)."""
    batch_size: int = Field(16, ge=1)
    """Examples per worker per micro-batch."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    lr: float = Field(5e-5, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay."""
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    """Share of steps with linear warm-up; then linear decay to zero."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    bf16: bool = True
    """bf16 autocast where the hardware runs bf16 natively (GPUs; CPUs with AVX-512 BF16 or AMX,
    where MiniLM trains ~3x faster than in fp32); fp32 on other CPUs, whatever this says."""
    seed: int = 0
    """Seed of weight init, dropout and shuffling."""
    shuffle: bool = True
    """Shuffle training examples each epoch (local shuffle buffer in the streaming ingest)."""
    log_every_steps: int = Field(10, ge=1)
    """Progress line every N optimizer steps (step, loss, samples/s, ETA)."""
    storage_path: str = "runs/demo/train"
    """Where Ray Train keeps checkpoints and run state (local path or ``s3://``)."""
    run_name: str | None = Field(None, pattern=PATH_COMPONENT_PATTERN)
    """Run name under ``storage_path`` (a directory name: letters, digits, ``_ . -``); rerunning
    with the same name resumes from its last checkpoint. None: derived from the job and ``out``."""
    resume: bool = True
    """Resume from the run's latest checkpoint when one exists; False starts fresh (the old
    run directory is deleted)."""
    checkpoint_every_steps: int = Field(100, ge=1)
    """Checkpoint every N optimizer steps (and always at the end)."""
    checkpoints_to_keep: int = Field(2, ge=1)
    """Checkpoints kept in storage (older ones are deleted)."""
    max_failures: int = Field(1, ge=-1)
    """``FailureConfig.max_failures``: worker-group restarts from the last checkpoint (-1: no limit)."""
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    """Workers and resources."""


class LoraSettings(ConfigModel):
    """Optional LoRA adapters (peft); merged into the weights on export."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights."""
    r: int = Field(16, ge=1)
    """Adapter rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the adapter input."""
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters (Llama-family names)."""


class PromptSettings(ConfigModel):
    """Token budgets of the member and job sections of a decoder prompt (recorded in the
    export's ``lantern_batch.json``; precompute must build the same prompt)."""

    member_tokens: int = Field(300, ge=16)
    """Budget of the member section (prompts.member_text); 300 = explainer_messages' default."""
    job_tokens: int = Field(300, ge=16)
    """Budget of the job section (prompts.job_text); 300 = explainer_messages' default."""
    max_length: int = Field(768, ge=32)
    """Longest prompt + output sequence in tokens; longer prompts are cut from the left of
    the data block's end (the output tokens are always kept)."""
    max_target_tokens: int = Field(128, ge=8)
    """Longest output (explanation or JSON) in tokens; longer targets are truncated."""


class DataSettings(ConfigModel):
    """Which examples a job trains on and how the held-out split is drawn."""

    teacher_labels: str | None = "runs/demo/synth"
    """Teacher-label table (TEACHER_LABELS_SCHEMA), local or ``s3://``. A synthesis output
    directory is accepted: its ``fused/`` table is used when present, else ``labels/teacher=NAME``
    (``teacher`` picks one when there are several). None: no teacher labels."""
    teacher: str | None = Field(None, pattern=PATH_COMPONENT_PATTERN)
    """Teacher name under ``labels/teacher=NAME`` (only needed with several teachers and no fused table)."""
    prompt_version: str | None = Field(None, pattern=PATH_COMPONENT_PATTERN)
    """Prompt version of the teacher labels to train on (the teacher's ``prompt_version`` in
    synthesis); rows of other versions are not read. None: the table's only version (a table
    holding several is an error naming them). A fused table has none to filter."""
    seed: str | None = "runs/demo/data/seed"
    """D_seed (SEED_SCHEMA). None: no seed rows."""
    seed_weight: float = Field(1.0, ge=0)
    """Loss weight of a seed row relative to a teacher-labelled row."""
    holdout_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of pairs held out for evaluation (by a hash of member_id, job_id)."""
    split_salt: str = "lantern"
    """Salt of the split hash (change it to draw a different split)."""
    max_examples: int | None = Field(None, ge=1)
    """Cap on training examples (the first read); every held-out row is kept for evaluation."""
    probability_tolerance: float = Field(1e-3, gt=0)
    """A row's p_high + p_medium + p_low must be within this of 1."""
    broadcast_join_max_rows: int = Field(2_000_000, ge=0)
    """Join members/jobs/pairs by broadcasting them to the prep actors when the three tables
    hold at most this many rows together; above it, Ray Data's shuffle hash join."""
    prep_actors: int = Field(1, ge=1)
    """Actors building examples (each loads the tokenizer and, for a broadcast join, the lookups)."""
    in_process_max_rows: int = Field(20_000, ge=0)
    """Build the examples in the driver, with the same functions and outputs, when the label
    tables hold at most this many rows together and the join is a broadcast join: a Ray Data
    pass costs ~50 s of worker start-up on a small machine for ~2 s of work at demo size.
    0: always Ray Data."""


class ClassifierModelSettings(ConfigModel):
    """The encoder student."""

    encoder: str = "bundled:minilm"
    """Any HF encoder reference (bundled:minilm, a local dir, s3://, ``hub:org/name`` where a hub is reachable)."""
    pooling: Literal["mean", "cls"] = "mean"
    """Pooling of token states into one vector."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout before the head."""
    max_length: int = Field(160, ge=16)
    """Token limit of the classifier input (MiniLM: the evidence lines of
    :func:`lantern_batch.prompts.classifier_text` take ~155 tokens for a typical pair, ~175 at
    the 90th percentile, the own skill list last; free text fills the rest)."""
    text_max_chars: int = Field(900, ge=64)
    """Character budget of :func:`lantern_batch.prompts.classifier_text`."""


class SoftKDSettings(ConfigModel):
    """Logit-level KD of the classifier: ``alpha · KD(T) + (1 − alpha) · CE``."""

    alpha: float = Field(0.5, ge=0, le=1)
    """Weight of the soft-label term."""
    temperature: float = Field(2.0, gt=0)
    """KD temperature T."""
    teacher_model: str | None = None
    """An exported classifier whose predictions replace the table's probabilities as soft
    targets (used by chains: each stage's export teaches the next)."""


class TokenKDSettings(ConfigModel):
    """Token-level KD of a decoder student: ``lambda_sft · SFT + lambda_kd · D(teacher ‖ student)``."""

    lambda_sft: float = Field(1.0, ge=0)
    """Weight of the token cross-entropy on the teacher's output."""
    lambda_kd: float = Field(1.0, ge=0)
    """Weight of the token-level divergence (0: SFT only)."""
    divergence: Literal["forward_kl", "reverse_kl", "js", "tvd"] = "tvd"
    """Divergence; LANTERN found TVD best on ROUGE."""
    rest: Literal["bucket", "renormalize"] = "bucket"
    """Mass outside the stored top-k: one extra bucket, or renormalise over the top-k."""
    teacher_model: str | None = None
    """A causal LM (sharing the student's tokenizer) run alongside the student to supply the
    top-k online instead of the table's stored top-k (chains: the previous stage's export)."""
    topk: int = Field(20, ge=1)
    """k of the online teacher's top-k."""


class GenerationEvalSettings(ConfigModel):
    """Held-out evaluation of a decoder by generation."""

    num_pairs: int = Field(48, ge=1)
    """Held-out pairs generated for ROUGE / label agreement."""
    max_new_tokens: int = Field(96, ge=8)
    """Generation budget per pair."""
    batch_size: int = Field(8, ge=1)
    """Prompts per generate call."""


class ExplainerEvalSettings(GenerationEvalSettings):
    """Held-out evaluation of the explainer: ROUGE of generations and teacher-forced loss."""

    loss_pairs: int = Field(128, ge=0)
    """Held-out pairs scored by teacher forcing (per-token NLL and top-1 accuracy of the
    outputs, trained vs untrained student): one forward pass each, far cheaper than generation."""
    compare_untrained: bool = True
    """Also score the untrained student (``base_*`` metrics): a second generation pass over the
    same pairs, about as long as the first. Off where the baseline is known and time is short."""


class ExplainerDataSettings(DataSettings):
    """Explainer examples: teacher-labelled pairs with explanations (D_seed optional)."""

    seed: str | None = None
    """D_seed (SEED_SCHEMA) rows added to the teacher's; None: teacher labels only."""


class TeacherSFTDataSettings(DataSettings):
    """Teacher SFT examples: D_seed only."""

    teacher_labels: str | None = None
    """Unused by teacher SFT (it learns from D_seed)."""
    holdout_fraction: float = Field(0.2, ge=0, lt=1)
    """Share of seed pairs held out to measure label agreement before and after SFT."""


class ClassifierTrainSettings(TrainSettings):
    """Classifier optimisation (MiniLM: lr 1e-4, 32 per batch, 2 epochs)."""

    epochs: float = Field(2.0, gt=0)
    """Passes over the training examples."""
    batch_size: int = Field(32, ge=1)
    """Examples per worker per micro-batch."""
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate (AdamW)."""


class ExplainerTrainSettings(TrainSettings):
    """Explainer optimisation (a pruned student needs a high rate to recover: 2e-4)."""

    batch_size: int = Field(4, ge=1)
    """Examples per worker per micro-batch."""
    lr: float = Field(2e-4, gt=0)
    """Peak learning rate (AdamW)."""
    checkpoint_every_steps: int = Field(50, ge=1)
    """Checkpoint every N optimizer steps (and always at the end)."""


class TeacherSFTTrainSettings(TrainSettings):
    """Teacher SFT optimisation."""

    batch_size: int = Field(2, ge=1)
    """Examples per worker per micro-batch."""
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate (AdamW)."""
    label_loss_weight: float = Field(0.0, ge=0)
    """Weight of an extra cross-entropy on the fit-label token (the output's first decision,
    the one synthesis reads), added to the mean over all ~100 output tokens, where the label
    alone counts ~1%. 0 (default): plain SFT on the whole output."""
    checkpoint_every_steps: int = Field(50, ge=1)
    """Checkpoint every N optimizer steps (and always at the end)."""


class TeacherPromptSettings(PromptSettings):
    """Teacher prompt budgets: synthesis's (``prompts.MEMBER_TOKENS``/``JOB_TOKENS``), so SFT
    trains on the prompts synthesis sends (v1's system prompt alone is ~1350 SmolLM2 tokens)."""

    member_tokens: int = Field(380, ge=16)
    """Budget of the member section."""
    job_tokens: int = Field(380, ge=16)
    """Budget of the job section."""
    max_length: int = Field(3072, ge=32)
    """Longest prompt + output sequence in tokens (synthesis's ``max_model_len``)."""
    max_target_tokens: int = Field(192, ge=8)
    """Longest JSON output in tokens."""


class TeacherEvalSettings(GenerationEvalSettings):
    """Held-out label agreement of the teacher."""

    num_pairs: int = Field(40, ge=1)
    """Held-out seed pairs scored before and after SFT."""
    batch_size: int = Field(4, ge=1)
    """Prompts per forward pass."""


class _TableJob(ConfigModel):
    SHORTCUTS: ClassVar[dict[str, str]] = {**_TABLE_SHORTCUTS, "--teacher-labels": "data.teacher_labels",
                                           "--seed": "data.seed"}

    inputs: InputTables = Field(default_factory=InputTables)
    """Members, jobs and pairs tables (text is built from them; pairs supply the query)."""
    ray: RayConfig = Field(default_factory=RayConfig)
    """Ray connection."""
    work_dir: str | None = None
    """Prepared examples and rejected rows; None: ``<train.storage_path>/data/<run name>``
    (shared storage, so Ray workers on every node can read the examples)."""

    def resolved_work_dir(self) -> str:
        from lantern_batch import io

        if self.work_dir:
            return self.work_dir
        job = {"ClassifierConfig": "classifier", "ExplainerConfig": "explainer"}.get(type(self).__name__, "teacher_sft")
        return io.join(self.train.storage_path, "data", self.resolved_run_name(job))  # type: ignore[attr-defined]

    def resolved_run_name(self, job: str) -> str:
        """Base run name under the storage path (stable per job and output)."""
        import hashlib

        if self.train.run_name:  # type: ignore[attr-defined]
            return self.train.run_name  # type: ignore[attr-defined]
        digest = hashlib.sha256(str(self.out).encode()).hexdigest()[:8]  # type: ignore[attr-defined]
        return f"{job}-{digest}"

    def training_run_name(self, job: str, data_fingerprint: str) -> str:
        """The Ray Train run: the base name plus a hash of the training data and of every
        setting that changes the result, so a rerun after a crash resumes its own run while
        new data or new hyperparameters start a new one. An explicit ``train.run_name`` is
        used as is."""
        import hashlib
        import json

        if self.train.run_name:  # type: ignore[attr-defined]
            return self.train.run_name  # type: ignore[attr-defined]
        settings = self.model_dump(mode="json", exclude={"ray", "out", "work_dir", "inputs", "eval", "calibrate", "calibrate_on",
                                                         "min_accuracy", "min_macro_f1"})
        for key in ("storage_path", "resume", "log_every_steps", "checkpoint_every_steps", "checkpoints_to_keep",
                    "max_failures"):
            settings["train"].pop(key, None)
        blob = json.dumps({"data": data_fingerprint, "settings": settings}, sort_keys=True)
        return f"{self.resolved_run_name(job)}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


MIN_CALIBRATION_ROWS = 30
"""Fewest held-out D_seed rows ``calibrate_on: seed`` fits a temperature on."""


class ClassifierConfig(_TableJob):
    """``lantern-batch distill classifier``: encoder student on fused soft labels + D_seed."""

    out: str = "runs/demo/models/classifier"
    """Export directory (HF encoder + head + lantern_batch.json + metrics.json)."""
    data: DataSettings = Field(default_factory=DataSettings)
    """Training examples."""
    model: ClassifierModelSettings = Field(default_factory=ClassifierModelSettings)
    """The encoder student."""
    kd: SoftKDSettings = Field(default_factory=SoftKDSettings)
    """Logit-level KD."""
    train: ClassifierTrainSettings = Field(default_factory=ClassifierTrainSettings)
    """Optimisation and Ray Train settings."""
    calibrate: bool = True
    """Fit a softmax temperature on the held-out split (minimum NLL) and record it in the export."""
    calibrate_on: Literal["seed", "all"] = "seed"
    """Which held-out rows the temperature is fitted on: ``seed`` — D_seed's, the reference
    labels, when at least :data:`MIN_CALIBRATION_ROWS` are held out (else all rows); ``all`` —
    teacher rows too. Noisy teacher labels pull the temperature up: fitted on the demo's 24
    teacher and 126 seed rows it was 1.56, and the seed rows' ECE rose from 0.080 to 0.089."""
    min_accuracy: float | None = None
    """Fail (exit 3) when held-out accuracy vs teacher labels is below this; None: no gate."""

    def plan(self) -> list[str]:
        return [
            f"read teacher labels {self.data.teacher_labels} and seed {self.data.seed}",
            f"join members/jobs/pairs; write examples under {self.resolved_work_dir()}",
            f"Ray Train {self.train.scaling.num_workers} worker(s): {self.model.encoder} "
            f"({self.model.pooling} pooling), alpha={self.kd.alpha} T={self.kd.temperature}",
            f"checkpoints under {self.train.storage_path}/{self.resolved_run_name('classifier')}-<data+settings hash>",
            f"evaluate + calibrate on the held-out split; export to {self.out}",
        ]


class ExplainerStudentSettings(ConfigModel):
    """How the decoder student is built."""

    source: str = "bundled:smollm2"
    """Causal LM to start from (the teacher, for layer pruning)."""
    keep_every: int | None = Field(3, ge=1)
    """Keep every n-th decoder layer (the last layer is always kept): 30 → 10 layers for n=3,
    ~135M → ~63M parameters with SmolLM2 (embeddings are 28M of it). None or 1: no pruning."""
    keep_layers: list[int] | None = None
    """Explicit layer indices to keep (overrides ``keep_every``)."""
    lora: LoraSettings = Field(default_factory=LoraSettings)
    """Optional LoRA (merged on export)."""


class ExplainerConfig(_TableJob):
    """``lantern-batch distill explainer``: decoder student on D_t, SFT + token-level KD."""

    out: str = "runs/demo/models/explainer"
    """Export directory (merged HF causal LM that vLLM loads + metrics.json)."""
    data: ExplainerDataSettings = Field(default_factory=ExplainerDataSettings)
    """Training examples (teacher-labelled pairs with explanations)."""
    student: ExplainerStudentSettings = Field(default_factory=ExplainerStudentSettings)
    """The decoder student."""
    kd: TokenKDSettings = Field(default_factory=TokenKDSettings)
    """Loss mix and divergence."""
    prompt_version: str = Field(EXPLAINER_PROMPT_VERSION, pattern=PATH_COMPONENT_PATTERN)
    """Explainer prompt version (``lantern_batch.prompts.EXPLAINER_PROMPT_VERSIONS``); recorded in
    the export, where precompute reads it to build the same prompt."""
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    """Prompt budgets."""
    train: ExplainerTrainSettings = Field(default_factory=ExplainerTrainSettings)
    """Optimisation and Ray Train settings."""
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)
    """DeepSpeed ZeRO (off: DDP)."""
    eval: ExplainerEvalSettings = Field(default_factory=ExplainerEvalSettings)
    """ROUGE and teacher-forced loss on held-out pairs against the untrained student."""

    def plan(self) -> list[str]:
        prune = self.student.keep_layers or (f"every {self.student.keep_every} layer(s)" if self.student.keep_every else "all layers")
        return [
            f"read teacher labels {self.data.teacher_labels} (explanations, top-k)",
            f"student from {self.student.source} keeping {prune}; lora={self.student.lora.enabled}",
            f"loss {self.kd.lambda_sft}·SFT + {self.kd.lambda_kd}·{self.kd.divergence}(rest={self.kd.rest})",
            f"Ray Train {self.train.scaling.num_workers} worker(s), deepspeed={self.deepspeed.enabled}"
            + (f" ZeRO-{self.deepspeed.zero_stage}" if self.deepspeed.enabled else ""),
            f"ROUGE on {self.eval.num_pairs} held-out pairs vs the untrained student; export to {self.out}",
        ]


class TeacherSFTConfig(_TableJob):
    """``lantern-batch distill teacher-sft``: fine-tune T2 on D_seed (full structured output)."""

    SHORTCUTS: ClassVar[dict[str, str]] = {**_TABLE_SHORTCUTS, "--seed": "data.seed"}

    out: str = "runs/demo/models/teacher"
    """Export directory (HF causal LM that vLLM loads + metrics.json)."""
    model: str = "bundled:smollm2"
    """The teacher T2 before SFT."""
    data: TeacherSFTDataSettings = Field(default_factory=TeacherSFTDataSettings)
    """D_seed (``data.seed``) and its held-out split."""
    lora: LoraSettings = Field(default_factory=LoraSettings)
    """Optional LoRA (merged on export)."""
    prompt_version: str = Field("v1", pattern=PATH_COMPONENT_PATTERN)
    """Teacher prompt version (``lantern_batch.prompts.PROMPT_VERSIONS``); use the version
    synthesis runs the teacher with, so what SFT teaches is what synthesis asks."""
    prompt: TeacherPromptSettings = Field(default_factory=TeacherPromptSettings)
    """Prompt budgets (the teacher prompt: teacher_messages with these data budgets)."""
    train: TeacherSFTTrainSettings = Field(default_factory=TeacherSFTTrainSettings)
    """Optimisation and Ray Train settings."""
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)
    """DeepSpeed ZeRO (off: DDP)."""
    eval: TeacherEvalSettings = Field(default_factory=TeacherEvalSettings)
    """Label agreement with held-out seed labels before and after SFT."""
    min_macro_f1: float | None = Field(None, ge=0, le=1)
    """Fail (exit 3) when T2's held-out macro-F1 after SFT is below this, so a teacher that
    learnt one label (macro-F1 ~0.14 on three classes) never labels a synthesis run; None: no
    gate. The model is exported either way (its ``metrics.json`` says what it predicted)."""

    @model_validator(mode="after")
    def _needs_seed(self) -> TeacherSFTConfig:
        if not self.data.seed:
            raise ValueError("data.seed must name the D_seed table for teacher SFT")
        return self

    def plan(self) -> list[str]:
        return [
            f"read D_seed {self.data.seed}; hold out {self.data.holdout_fraction:.0%} of pairs",
            f"label agreement of {self.model} on held-out seed pairs (before)",
            f"Ray Train SFT {self.train.scaling.num_workers} worker(s) on the full JSON output; lora={self.lora.enabled}",
            f"label agreement after; export to {self.out}",
        ]


class ChainStage(ConfigModel):
    """One stage of a chain: a name and dotted overrides of the stage's job config."""

    name: str = Field(pattern=PATH_COMPONENT_PATTERN)
    """Stage name: its export goes to ``<chain.out>/<name>`` (letters, digits, ``_ . -``)."""
    set: list[str] = Field(default_factory=list)
    """``dotted.key=value`` overrides applied to ``base`` for this stage."""


class ChainConfig(ConfigModel):
    """``lantern-batch distill chain``: teacher → student → smaller student.

    Stage i+1 is initialised from stage i's export (``student.source``) and distilled from it
    (``kd.teacher_model``): each run's export is the next run's teacher. The first stage learns
    from the teacher-label table (and, with ``first_teacher``, from that model online).
    """

    SHORTCUTS: ClassVar[dict[str, str]] = {"--out": "out"}

    task: Literal["explainer"] = "explainer"
    """Which student the chain trains (decoder explainers: LANTERN's 7B → 1.5B → 0.5B)."""
    out: str = "runs/demo/models/chain"
    """Each stage exports to ``<out>/<stage name>``."""
    base: dict[str, Any] = Field(default_factory=dict)
    """Job config shared by the stages (an ExplainerConfig / ClassifierConfig mapping)."""
    first_teacher: str | None = None
    """Online teacher of the first stage (None: the table's stored top-k / probabilities)."""
    stages: list[ChainStage] = Field(default_factory=lambda: [
        ChainStage(name="student", set=["student.keep_every=2"]),
        ChainStage(name="small_student", set=["student.keep_every=2"]),
    ])
    """Stages in order (at least one)."""
    ray: RayConfig = Field(default_factory=RayConfig)
    """Ray connection (shared by every stage)."""

    @model_validator(mode="after")
    def _check(self) -> ChainConfig:
        if not self.stages:
            raise ValueError("stages must list at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError("stage names must be unique")
        for i in range(len(self.stages)):
            self.stage_config(i)  # fails early on a bad key or value
        return self

    def stage_out(self, index: int) -> str:
        """Export directory of stage ``index``."""
        return f"{self.out.rstrip('/')}/{self.stages[index].name}"

    def stage_config(self, index: int) -> ExplainerConfig:
        """The job config of stage ``index``: ``base`` + the previous export as teacher and
        starting point + the stage's own overrides (which win)."""
        from lantern_batch.config import load_config

        stage = self.stages[index]
        wiring = [f"out={self.stage_out(index)}"]
        teacher = self.stage_out(index - 1) if index > 0 else self.first_teacher
        if teacher:
            wiring.append(f"kd.teacher_model={teacher}")
        if index > 0:
            wiring.append(f"student.source={teacher}")
        return load_config(ExplainerConfig, None, [*wiring, *stage.set], base=copy.deepcopy(self.base))

    def plan(self) -> list[str]:
        steps = []
        for i, stage in enumerate(self.stages):
            cfg = self.stage_config(i)
            src = cfg.student.source
            steps.append(f"stage {i + 1} '{stage.name}': from {src}, teacher {cfg.kd.teacher_model or 'table'} -> {cfg.out}")
        return steps
