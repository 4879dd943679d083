"""The whole pipeline at toy scale, on one machine: ``lantern-batch demo`` (``make demo``).

    lantern-batch demo                       # everything under runs/demo/
    lantern-batch demo --out /tmp/d --set stages='[generate, validate]'

Stages, in order (each is the same code its own command runs; this module only wires paths):
generate the world -> validate it -> teacher SFT of SmolLM2 on D_seed -> teacher synthesis with
vLLM -> distil the classifier and the explainer -> precompute scores with explanations ->
evaluate. Every stage's config is a field here, so ``--set synthesize.vllm.batch_size=8`` reaches
it; paths under ``out`` are set by :func:`wire` and need not be repeated.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lantern_batch import io
from lantern_batch.config import (
    ConfigModel,
    RayConfig,
    deep_merge,
    read_yaml,
    write_resolved_config,
)
from lantern_batch.distill.config import ClassifierConfig, ExplainerConfig, TeacherSFTConfig
from lantern_batch.evaluate.config import EvaluateConfig
from lantern_batch.logs import event, get_logger
from lantern_batch.precompute.config import PrecomputeConfig
from lantern_batch.teacher.config import SynthesizeConfig
from lantern_batch.world import GenerateConfig

log = get_logger(__name__)

Stage = Literal[
    "generate", "validate", "teacher-sft", "synthesize", "classifier", "explainer", "precompute", "evaluate"
]
ALL_STAGES: tuple[str, ...] = (
    "generate", "validate", "teacher-sft", "synthesize", "classifier", "explainer", "precompute", "evaluate"
)


#: The project's configs/ folder (present in a checkout and in a ``ray job submit`` working dir).
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

#: Each stage starts from its own demo config, so this machine's settings (CPU placement, small
#: KV cache, training budgets) live once, in configs/demo_<job>.yaml.
STAGE_CONFIGS: dict[str, str] = {
    "generate": "demo_generate.yaml",
    "teacher_sft": "demo_distill_teacher_sft.yaml",
    "synthesize": "demo_synthesize.yaml",
    "classifier": "demo_distill_classifier.yaml",
    "explainer": "demo_distill_explainer.yaml",
    "precompute": "demo_precompute.yaml",
    "evaluate": "demo_evaluate.yaml",
}


class DemoConfig(ConfigModel):
    """Config of ``lantern-batch demo``: where everything goes, which stages run, each stage's config."""

    out: str = "runs/demo"
    """Root of every output: data/, labels/, models/, scores/, errors/, report/."""
    stages: list[Stage] = Field(default_factory=lambda: list(ALL_STAGES))
    """Stages to run, in pipeline order."""
    ray: RayConfig = RayConfig()
    """Ray connection, shared by every stage."""
    generate: GenerateConfig = GenerateConfig()
    """The synthetic world (paths are set from ``out``)."""
    teacher_sft: TeacherSFTConfig = TeacherSFTConfig()
    """Fine-tuning SmolLM2 on D_seed into the in-house teacher T2."""
    synthesize: SynthesizeConfig = SynthesizeConfig()
    """Teacher synthesis with T2 (the SFT'd teacher when that stage runs)."""
    classifier: ClassifierConfig = ClassifierConfig()
    """The encoder classifier student."""
    explainer: ExplainerConfig = ExplainerConfig()
    """The decoder explainer student (layer-pruned from the teacher)."""
    precompute: PrecomputeConfig = PrecomputeConfig()
    """The nightly precompute over every pair."""
    evaluate: EvaluateConfig = EvaluateConfig()
    """The evaluation report."""

    stage_configs: dict[str, str | None] = Field(default_factory=dict)
    """Base config file of a stage (key: the stage's field name here), overriding the default
    ``configs/demo_<job>.yaml``; null starts that stage from its class defaults. Values given
    under the stage's own key (or by ``--set``) apply on top."""

    SHORTCUTS: ClassVar[dict[str, str]] = {"--out": "out"}

    @model_validator(mode="before")
    @classmethod
    def _stage_bases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        chosen = {**{k: str(CONFIGS_DIR / v) for k, v in STAGE_CONFIGS.items()}, **(data.get("stage_configs") or {})}
        for field, path in chosen.items():
            if path is None or field not in cls.model_fields:
                continue
            if not Path(path).is_file() and field not in (data.get("stage_configs") or {}):
                continue  # an installed package without the checkout's configs/: class defaults
            data[field] = deep_merge(read_yaml(path), data.get(field) or {})
        return data

    def plan(self) -> list[str]:
        return [f"{stage}" for stage in self.stages]


def _teacher_ref(cfg: DemoConfig, exported: str) -> str:
    """T2, for synthesis and as the explainer's parent: the teacher this run trains, else the one
    an earlier run exported under ``out`` (a rerun of later stages keeps the demo's own chain),
    else ``teacher_sft.model`` (no demo teacher yet: the base model).

    Raises:
        QualityGateError: the earlier run's teacher missed ``teacher_sft.min_macro_f1`` (it is
            exported so it can be inspected, never used by a rerun).
    """
    from lantern_batch.distill.trainer import require_heldout
    from lantern_batch.models import export_root

    if "teacher-sft" in cfg.stages:
        return exported
    metrics = io.read_json(io.join(export_root(exported), "metrics.json"))
    if metrics is None:
        return cfg.teacher_sft.model
    after = metrics.get("label_agreement_after") or {}
    require_heldout(f"teacher T2 at {exported}", after, "macro_f1", cfg.teacher_sft.min_macro_f1)
    return exported


def wire(cfg: DemoConfig) -> DemoConfig:
    """Point every stage's inputs and outputs at the layout under ``cfg.out``:

    ``data/`` (world), ``models/{teacher,classifier,explainer}/``, ``synth/`` (synthesis:
    ``synth/labels/teacher=NAME/``, ``synth/fused/``, ``synth/errors/``, as a standalone
    ``synthesize`` with configs/demo_synthesize.yaml writes it), ``scores/`` and ``errors/`` (precompute),
    ``report/``, ``train/`` (checkpoints).
    """
    cfg = cfg.model_copy(deep=True)
    root = cfg.out
    data = io.join(root, "data")
    models = io.join(root, "models")
    labels = io.join(root, "synth")
    tables = {t: io.join(data, t) for t in ("members", "jobs", "pairs")}
    teacher_ref = _teacher_ref(cfg, io.join(models, "teacher"))

    cfg.generate.out = data
    for stage_cfg in (cfg.teacher_sft, cfg.synthesize, cfg.classifier, cfg.explainer, cfg.precompute, cfg.evaluate):
        stage_cfg.inputs = stage_cfg.inputs.model_copy(update=tables)
        if hasattr(stage_cfg, "ray"):
            stage_cfg.ray = cfg.ray
    for name, train_cfg in (("teacher_sft", cfg.teacher_sft), ("classifier", cfg.classifier), ("explainer", cfg.explainer)):
        train_cfg.train.storage_path = io.join(root, "train")
        train_cfg.out = io.join(models, name.replace("_sft", ""))
    cfg.teacher_sft.data.seed = io.join(data, "seed")
    cfg.classifier.data.seed = io.join(data, "seed")
    cfg.classifier.data.teacher_labels = labels
    cfg.explainer.data.teacher_labels = labels
    # The fused table has no text: the explainer reads the LLM teacher's own labels (only the
    # explanations synthesis validated) and D_seed's explanations.
    llm_teachers = [t.name for t in cfg.synthesize.teachers if t.kind != "engagement"]
    if len(cfg.synthesize.teachers) > 1 and llm_teachers:
        cfg.explainer.data.teacher = llm_teachers[0]
    # Each student trains on (and the report compares with) the labels of the prompt version
    # synthesis ran, never a stored one of another version; the fused table has none.
    versions = {t.name: t.prompt_version for t in cfg.synthesize.teachers}
    only = next(iter(versions.values())) if len(versions) == 1 else None
    cfg.classifier.data.prompt_version = cfg.classifier.data.prompt_version or only
    cfg.explainer.data.prompt_version = (cfg.explainer.data.prompt_version
                                         or versions.get(cfg.explainer.data.teacher or "", only))
    cfg.evaluate.teacher_prompt_version = (cfg.evaluate.teacher_prompt_version
                                           or versions.get(cfg.evaluate.teacher or "", only))
    cfg.explainer.data.seed = io.join(data, "seed")
    cfg.explainer.student.source = teacher_ref

    cfg.synthesize.out = labels
    cfg.synthesize.engagement.apply_log = io.join(data, "apply_log")
    cfg.synthesize.engagement.seed = io.join(data, "seed")
    cfg.synthesize.teachers = [
        t.model_copy(update={"model": teacher_ref}) if t.kind == "vllm" else t for t in cfg.synthesize.teachers
    ]

    cfg.precompute.out = root
    cfg.precompute.classifier.ref = io.join(models, "classifier")
    cfg.precompute.explainer.ref = io.join(models, "explainer")
    if cfg.precompute.quality_gate.canary is not None:
        cfg.precompute.quality_gate.canary = io.join(data, "seed")

    cfg.evaluate.seed = io.join(data, "seed")
    cfg.evaluate.labels = labels
    cfg.evaluate.scores = root
    cfg.evaluate.classifier = io.join(models, "classifier")
    cfg.evaluate.explainer = io.join(models, "explainer")
    cfg.evaluate.teacher_model = io.join(models, "teacher")
    cfg.evaluate.out = io.join(root, "report")
    return cfg


def _validate(cfg: DemoConfig) -> dict[str, dict[str, int]]:
    from lantern_batch.validation import format_counts, validate_path

    counts = {}
    for table in ("members", "jobs", "pairs"):
        result = validate_path(table, io.join(cfg.generate.out, table),
                               errors_out=io.join(cfg.out, "validation", table))
        print(format_counts(result))
        counts[table] = result.counts
    return counts


def _explainer_inputs(cfg: Any) -> Any:
    """The explainer's config as wired, or, when the teacher kept no valid explanation (every
    output failed the validator), the same on D_seed alone, said in one line."""
    from lantern_batch.distill.data import resolve_teacher_labels
    from lantern_batch.errors import InputError

    if cfg.data.teacher_labels is None or cfg.data.seed is None:
        return cfg
    try:
        resolve_teacher_labels(cfg.data.teacher_labels, cfg.data.teacher)
    except InputError:
        print(f"demo: teacher '{cfg.data.teacher or 'T2'}' kept no valid explanation; "
              "the explainer learns from D_seed's explanations only")
        cfg = cfg.model_copy(deep=True)
        cfg.data.teacher_labels = None
    return cfg


def run(cfg: DemoConfig) -> int:
    """Run the configured stages in order; print where to look at the end."""
    from lantern_batch.world import run_generate

    cfg = wire(cfg)
    write_resolved_config(cfg, cfg.out)
    timings: dict[str, float] = {}
    from lantern_batch.distill.job import run_classifier, run_explainer, run_teacher_sft
    from lantern_batch.evaluate.job import run as run_evaluate
    from lantern_batch.precompute.job import run as run_precompute
    from lantern_batch.runtime import init_ray
    from lantern_batch.teacher.job import run as run_synthesize

    if any(stage not in ("generate", "validate") for stage in cfg.stages):
        init_ray(cfg.ray)
    runners = {
        "generate": lambda: run_generate(cfg.generate),
        "validate": lambda: _validate(cfg),
        "teacher-sft": lambda: run_teacher_sft(cfg.teacher_sft),
        "synthesize": lambda: run_synthesize(cfg.synthesize),
        "classifier": lambda: run_classifier(cfg.classifier),
        "explainer": lambda: run_explainer(_explainer_inputs(cfg.explainer)),
        "precompute": lambda: run_precompute(cfg.precompute),
        "evaluate": lambda: run_evaluate(cfg.evaluate),
    }
    for stage in cfg.stages:
        event(log, "demo.stage_start", stage=stage)
        start = time.perf_counter()
        result = runners[stage]()
        if isinstance(result, int) and result != 0:
            event(log, "demo.stage_failed", stage=stage, exit_code=result)
            return result
        timings[stage] = time.perf_counter() - start
        event(log, "demo.stage_done", stage=stage, seconds=round(timings[stage], 1))
    print("\nDemo finished. Stage times (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print("Where to look:")
    for what, path in (
        ("report", io.join(cfg.evaluate.out, "index.html")),
        ("scores", io.join(cfg.precompute.out, "scores")),
        ("errors", io.join(cfg.precompute.out, "errors")),
        ("teacher labels", io.join(cfg.synthesize.out, "labels")),
        ("models", io.join(cfg.out, "models")),
        ("world", cfg.generate.out),
        ("bad input rows", io.join(cfg.out, "validation")),
    ):
        if io.exists(path):
            print(f"  {what:15s} {path}")
    return 0
