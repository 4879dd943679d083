"""Entry points of the ``distill`` jobs (``run(cfg) -> exit code``), registered in ``cli.py``.

    lantern-batch distill teacher-sft --config configs/demo_distill_teacher_sft.yaml
    lantern-batch distill classifier  --config configs/demo_distill_classifier.yaml
    lantern-batch distill explainer   --config configs/demo_distill_explainer.yaml
    lantern-batch distill chain       --config configs/demo_distill_chain.yaml

Each job starts or joins Ray (``lantern_batch.runtime.init_ray``), prepares its examples with Ray
Data, trains with Ray Train, evaluates on the held-out split and exports to ``cfg.out`` with a
``metrics.json`` and the resolved config. The heavy modules are imported here lazily so that
``--dry-run`` and ``--help`` stay instant.
"""

from __future__ import annotations

from lantern_batch.distill.config import (
    ChainConfig,
    ClassifierConfig,
    ExplainerConfig,
    TeacherSFTConfig,
)
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)


def run_classifier(cfg: ClassifierConfig) -> int:
    """Distil the encoder classifier (see :mod:`lantern_batch.distill.train_classifier`)."""
    from lantern_batch.distill import train_classifier

    return train_classifier.run(cfg)


def run_explainer(cfg: ExplainerConfig) -> int:
    """Distil the decoder explainer (see :mod:`lantern_batch.distill.train_explainer`)."""
    from lantern_batch.distill import train_explainer

    return train_explainer.run(cfg)


def run_teacher_sft(cfg: TeacherSFTConfig) -> int:
    """Fine-tune the in-house teacher on D_seed (see :mod:`lantern_batch.distill.teacher_sft`)."""
    from lantern_batch.distill import teacher_sft

    return teacher_sft.run(cfg)


def run_chain(cfg: ChainConfig) -> int:
    """Train the chain's stages in order; stage i's export is stage i+1's teacher and start."""
    from lantern_batch.runtime import init_ray

    init_ray(cfg.ray)
    for i, stage in enumerate(cfg.stages):
        stage_cfg = cfg.stage_config(i)
        event(log, "chain.stage", index=i + 1, of=len(cfg.stages), stage=stage.name,
              source=stage_cfg.student.source, teacher=stage_cfg.kd.teacher_model or "table", out=stage_cfg.out)
        code = run_explainer(stage_cfg)
        if code:
            return code
    return 0
