"""Teacher synthesis: label member-job pairs with one or more teachers at scale.

Modules (light ones first; nothing here imports Ray or vLLM at import time):

* :mod:`~lantern_batch.teacher.config` — typed configs of ``synthesize`` and ``curate``.
* :mod:`~lantern_batch.teacher.parsing` — structured-output parsing and checks.
* :mod:`~lantern_batch.teacher.soft_labels` — p_high/p_medium/p_low from label-position logprobs.
* :mod:`~lantern_batch.teacher.topk` — the sparse top-k logprob store of explanation tokens.
* :mod:`~lantern_batch.teacher.records` — the stage's output rows (labels and error rows).
* :mod:`~lantern_batch.teacher.store` — output layout, commit markers, resume and clean-up.
* :mod:`~lantern_batch.teacher.inputs` — reading, validating and joining the input tables.
* :mod:`~lantern_batch.teacher.vllm_stage` — the vLLM actor that labels pairs.
* :mod:`~lantern_batch.teacher.engagement` — the engagement teacher (apply-log model).
* :mod:`~lantern_batch.teacher.blackbox` — the black-box teacher T1 (OpenAI-compatible API).
* :mod:`~lantern_batch.teacher.fusion` — fused soft labels and the agreement report.
* :mod:`~lantern_batch.teacher.curation` — review sheet export and import (D_seed).
* :mod:`~lantern_batch.teacher.job` — ``lantern-batch synthesize``.
"""
