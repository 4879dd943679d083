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
from typing import ClassVar, Literal

from pydantic import Field

from lantern_batch import io
from lantern_batch.config import ConfigModel, RayConfig, write_resolved_config
from lantern_batch.logs import event, get_logger
from lantern_batch.world import GenerateConfig

log = get_logger(__name__)

Stage = Literal["generate", "validate"]
ALL_STAGES: tuple[str, ...] = ("generate", "validate")


class DemoConfig(ConfigModel):
    """Config of ``lantern-batch demo``: where everything goes, which stages run, each stage's config."""

    out: str = "runs/demo"
    """Root of every output: data/, labels/, models/, scores/, errors/, report/."""
    stages: list[Stage] = Field(default_factory=lambda: list(ALL_STAGES))
    """Stages to run, in pipeline order."""
    ray: RayConfig = RayConfig()
    """Ray connection, shared by every stage."""
    generate: GenerateConfig = GenerateConfig(inject_bad_rows=0.01)
    """The synthetic world (paths are set from ``out``)."""

    SHORTCUTS: ClassVar[dict[str, str]] = {"--out": "out"}

    def plan(self) -> list[str]:
        return [f"{stage}" for stage in self.stages]


def wire(cfg: DemoConfig) -> DemoConfig:
    """Point every stage's inputs and outputs at the layout under ``cfg.out``."""
    cfg = cfg.model_copy(deep=True)
    cfg.generate.out = io.join(cfg.out, "data")
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


def run(cfg: DemoConfig) -> int:
    """Run the configured stages in order; print where to look at the end."""
    from lantern_batch.world import run_generate

    cfg = wire(cfg)
    write_resolved_config(cfg, cfg.out)
    timings: dict[str, float] = {}
    runners = {
        "generate": lambda: run_generate(cfg.generate),
        "validate": lambda: _validate(cfg),
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
    print(f"Where to look:\n  world:       {cfg.generate.out}/\n  bad rows:    {cfg.out}/validation/")
    return 0
