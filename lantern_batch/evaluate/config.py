"""Configuration of ``lantern-batch evaluate`` (light module: no heavy imports).

    lantern-batch evaluate --config configs/demo_evaluate.yaml
    lantern-batch evaluate --labels runs/demo/synth --scores runs/demo --out runs/demo/report

Every input is optional in the sense that a missing one turns its report section into
"not available"; the defaults are the local demo's layout under ``runs/demo/``.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from pydantic import Field, field_validator

from lantern_batch.config import PATH_COMPONENT_PATTERN, ConfigModel, InputTables
from lantern_batch.metrics import CALIBRATION_BINS


class EvaluateConfig(ConfigModel):
    """Compare the students (precompute output) with the teacher and write the HTML report."""

    SHORTCUTS: ClassVar[dict[str, str]] = {
        "--members": "inputs.members",
        "--jobs": "inputs.jobs",
        "--pairs": "inputs.pairs",
        "--out": "out",
        "--labels": "labels",
        "--scores": "scores",
        "--ds": "ds",
    }

    inputs: InputTables = InputTables()
    """Members and jobs: the rows of the judged pairs, against which an explanation's skills,
    years, levels and places are checked. ``pairs`` is not read."""
    seed: str | None = "runs/demo/data/seed"
    """D_seed (the seed labels), for the label distribution per stage; None: skip."""
    labels: str = "runs/demo/synth"
    """Output directory of ``synthesize``: holds ``labels/teacher=NAME/`` and, with several
    teachers, ``fused/``."""
    teacher: str | None = Field(None, pattern=PATH_COMPONENT_PATTERN)
    """Which teacher's labels the students are compared with: a NAME under
    ``labels/teacher=NAME/``, or ``fused``. None: ``fused`` when it exists, else the only
    teacher (the first by name when there are several)."""
    teacher_prompt_version: str | None = Field(None, pattern=PATH_COMPONENT_PATTERN)
    """Prompt version of the teacher labels compared (the teacher's ``prompt_version`` in
    synthesis); rows of other versions are not read. None: the labels' only version; labels
    holding several make the comparison "not available" with a note naming them. Not applied
    to ``fused`` (it has none)."""
    scores: str = "runs/demo"
    """OUTPUT directory of ``precompute`` (holds ``scores/ds=…/``)."""
    ds: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    """Partition of ``scores`` to evaluate (YYYY-MM-DD); None: the one ``scores/_LATEST`` names."""
    classifier: str | None = "runs/demo/models/classifier"
    """Exported classifier directory; its ``metrics.json`` (held-out metrics) is shown."""
    explainer: str | None = "runs/demo/models/explainer"
    """Exported explainer directory; its ``metrics.json`` (ROUGE vs the base model) is shown.
    The classifier's and the explainer's ``resolved_config.yaml`` give the held-out split
    (``data.holdout_fraction``, ``data.split_salt``): explanations are judged on held-out pairs
    only."""
    teacher_model: str | None = "runs/demo/models/teacher"
    """Exported teacher-SFT directory; its ``metrics.json`` (agreement with D_seed before and
    after SFT) is shown."""
    out: str = "runs/demo/report"
    """Report directory: ``index.html`` (self-contained) and ``metrics.json``."""
    calibration_bins: int = Field(CALIBRATION_BINS, ge=2, le=50)
    """Equal-width confidence bins of the reliability curve and ECE. The default is the project's
    one binning (:data:`lantern_batch.metrics.CALIBRATION_BINS`), the one distill's metrics.json
    ECEs use; another count makes the report's ECE incomparable with those."""
    max_pairs: int = Field(2_000_000, gt=0)
    """Most (teacher, student) pairs compared; above it a deterministic sample (by pair key hash)
    is taken so memory stays bounded. Label columns only: ~100 bytes a pair."""
    holdout_fraction: float | None = Field(None, ge=0, lt=1)
    """Held-out share of the distill split, for a student export whose resolved_config.yaml
    records none (set it to that run's ``data.holdout_fraction``). None: such an export makes
    the explanation checks unavailable rather than guessed."""
    split_salt: str = "lantern"
    """Salt of the distill split, used with ``holdout_fraction``."""
    max_explanations: int = Field(20_000, gt=0)
    """Most explanations judged (ROUGE and the explanation validator): a deterministic sample
    of the held-out compared pairs that carry a student explanation; ROUGE costs ~1 ms a pair."""
    max_policy_pairs: int = Field(200_000, gt=0)
    """Most held-out pairs the fit policy (:func:`lantern_batch.policy.score_pair`) labels for the
    first screen's table of models: a deterministic sample (by pair key hash) above it. The
    policy is what the demo world is generated from, so its label is the demo's ground truth;
    pure Python, ~50 us a pair."""
    num_examples: int = Field(8, ge=0, le=200)
    """Explanation examples shown side by side with the teacher's."""
    title: str = "lantern_batch evaluation"
    """Report title."""

    @field_validator("ds", mode="before")
    @classmethod
    def _ds_as_text(cls, value: object) -> object:
        # YAML (files and --set values alike) reads 2026-11-24 as a date.
        return value.isoformat() if isinstance(value, dt.date) else value

    def plan(self) -> list[str]:
        """What ``run`` reads and writes (printed by ``--dry-run``)."""
        teacher = self.teacher or "fused, else the only teacher"
        return [
            f"read teacher labels from {self.labels}/labels/ ({teacher})",
            f"read precompute scores from {self.scores}/scores/ (ds {self.ds or '_LATEST'})",
            f"read members {self.inputs.members} and jobs {self.inputs.jobs} (grounding of explanations)",
            "judge explanations of held-out pairs only (split from the classifier/explainer resolved_config.yaml)",
            "label held-out pairs by the fit policy (lantern_batch.policy) for the table of models",
            "read metrics.json of: " + (", ".join(
                p for p in (self.teacher_model, self.classifier, self.explainer) if p) or "none"),
            f"write {self.out}/index.html and {self.out}/metrics.json",
        ]
