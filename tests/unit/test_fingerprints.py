"""Content fingerprints: what changes a pair's input_fingerprint, and what does not."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from lantern_batch.classifier import bf16_supported
from lantern_batch.precompute.classifier_stage import ClassifierSettings
from lantern_batch.precompute.config import PrecomputeConfig
from lantern_batch.precompute.explainer_stage import ExplainerSettings
from lantern_batch.precompute.fingerprints import (
    content_hashes,
    engine_output_settings,
    pair_fingerprints,
    precompute_fingerprint,
    run_fingerprint,
    sample_hash,
)
from lantern_batch.runtime import engine_kwargs
from lantern_batch.schema import MEMBERS_SCHEMA, conform


def _members(**overrides) -> pa.Table:
    row = {
        "member_id": "m1",
        "headline": "Data engineer",
        "summary": "Builds batch pipelines.",
        "current_title": "Data Engineer",
        "seniority": "mid",
        "years_experience": 5.0,
        "skills": ["python", "spark"],
        "experience": [{"title": "Engineer", "company": "Acme", "start_year": 2019, "end_year": None,
                        "description": "Pipelines"}],
        "education": [{"degree": "BSc", "field": "CS", "school": "State"}],
        "location": "Seattle",
        "updated_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    row.update(overrides)
    return conform(pa.Table.from_pylist([row], schema=MEMBERS_SCHEMA), "members")


def test_content_hash_is_stable_and_sensitive_to_content():
    base = content_hashes(_members(), "members")[0]
    assert base == content_hashes(_members(), "members")[0]
    assert len(base) == 32
    assert content_hashes(_members(summary="Builds streaming pipelines."), "members")[0] != base
    assert content_hashes(_members(skills=["spark", "python"]), "members")[0] != base  # order matters
    assert content_hashes(_members(years_experience=5.5), "members")[0] != base
    nested = [{"title": "Engineer", "company": "Acme", "start_year": 2019, "end_year": 2024, "description": "Pipelines"}]
    assert content_hashes(_members(experience=nested), "members")[0] != base


def test_content_hash_ignores_updated_at_and_column_order():
    base = content_hashes(_members(), "members")[0]
    touched = _members(updated_at=datetime(2026, 6, 1, tzinfo=timezone.utc))
    assert content_hashes(touched, "members")[0] == base
    t = _members()
    reordered = conform(t.select(list(reversed(t.column_names))), "members")
    assert content_hashes(reordered, "members")[0] == base


def test_pair_fingerprint_depends_on_member_job_query_and_run():
    run_a = run_fingerprint({"classifier": "c1", "explainer": "e1"}, {"prompt_version": "v1"})
    run_b = run_fingerprint({"classifier": "c2", "explainer": "e1"}, {"prompt_version": "v1"})
    run_c = run_fingerprint({"classifier": "c1", "explainer": "e1"}, {"prompt_version": "v2"})
    assert len({run_a, run_b, run_c}) == 3
    fps = pair_fingerprints(["m", "m", "m2", "m", "m", None], ["j", "j", "j", "j2", "j", "j"],
                            [None, "", None, None, "q", None], run_a)
    assert fps[5] is None  # unknown member: no fingerprint
    assert len(set(fps[:5])) == 5  # null query differs from the empty query
    assert pair_fingerprints(["m"], ["j"], [None], run_b)[0] != fps[0]
    assert pair_fingerprints(["m"], ["j"], [None], run_a)[0] == fps[0]


def test_sample_hash_is_deterministic_uniform_and_seeded():
    m = [f"m{i}" for i in range(2000)]
    j = [f"j{i % 37}" for i in range(2000)]
    a = sample_hash(m, j, seed=0)
    assert a == sample_hash(m, j, seed=0)
    assert a != sample_hash(m, j, seed=1)
    assert all(0.0 <= x < 1.0 for x in a)
    assert 0.4 < sum(x < 0.5 for x in a) / len(a) < 0.6


def _stages() -> tuple[PrecomputeConfig, ClassifierSettings, ExplainerSettings]:
    cfg = PrecomputeConfig()
    cls = ClassifierSettings(model_dir="/m/cls", version="cls-1", max_length=160, max_chars=900, batch_size=32,
                             temperature=1.25, dtype="auto", torch_threads=2, use_gpu=False)
    exp = ExplainerSettings(model_dir="/m/exp", version="exp-1", prompt_version="e2",
                            engine_kwargs=dict(cfg.explainer.engine_kwargs),
                            sampling_params=dict(cfg.explainer.sampling_params))
    return cfg, cls, exp


def _run_fp(cfg, cls, exp) -> str:
    return precompute_fingerprint(cfg, cls, exp).run


def test_run_fingerprint_covers_every_setting_that_changes_an_output(monkeypatch):
    cfg, cls, exp = _stages()
    base = _run_fp(cfg, cls, exp)
    assert base == _run_fp(*_stages())
    engine = exp.engine_kwargs
    changed = {
        "calibration temperature": (cfg, dataclasses.replace(cls, temperature=1.5), exp),
        "classifier weights": (cfg, dataclasses.replace(cls, version="cls-2"), exp),
        "explainer weights": (cfg, cls, dataclasses.replace(exp, version="exp-2")),
        "explainer prompt version": (cfg, cls, dataclasses.replace(exp, prompt_version="e1")),
        "engine dtype": (cfg, cls, dataclasses.replace(exp, engine_kwargs={**engine, "dtype": "float32"})),
        "engine max_model_len": (cfg, cls, dataclasses.replace(exp, engine_kwargs={**engine, "max_model_len": 1024})),
        "engine seed": (cfg, cls, dataclasses.replace(exp, engine_kwargs={**engine, "seed": 1})),
        "sampling": (cfg, cls, dataclasses.replace(exp, sampling_params={"max_tokens": 64, "temperature": 0.0})),
        "retry sampling": (cfg, cls, dataclasses.replace(exp, retry_sampling_params={"temperature": 0.9})),
        "no regeneration": (cfg, cls, dataclasses.replace(exp, regenerations=0)),
        "more regenerations": (cfg, cls, dataclasses.replace(exp, regenerations=3)),
        "explanation cap": (cfg, cls, dataclasses.replace(exp, max_explanation_chars=300)),
        "classifier length": (cfg, dataclasses.replace(cls, max_length=128), exp),
        "explainer off": (cfg, cls, None),
    }
    fps = {what: _run_fp(*args) for what, args in changed.items()}
    assert all(fp != base for fp in fps.values()), [w for w, fp in fps.items() if fp == base]
    assert len(set(fps.values())) == len(fps)
    # Settings that only change speed or memory reuse everything.
    for key, value in (("enforce_eager", False), ("kv_cache_memory_bytes", 1 << 30), ("enable_prefix_caching", True)):
        assert _run_fp(cfg, cls, dataclasses.replace(exp, engine_kwargs={**engine, key: value})) == base, key
    assert _run_fp(cfg, dataclasses.replace(cls, batch_size=8, torch_threads=1), exp) == base
    # The classifier's text builder is code: its version is in the fingerprint too.
    monkeypatch.setattr("lantern_batch.prompts.CLASSIFIER_TEXT_VERSION", "c9")
    assert _run_fp(cfg, cls, exp) != base


def test_run_fingerprint_records_what_it_covers():
    cfg, cls, exp = _stages()
    fp = precompute_fingerprint(cfg, cls, exp)
    assert fp.models == {"classifier": "cls-1", "explainer": "exp-1"}
    assert fp.settings["calibration_temperature"] == 1.25
    host = "bfloat16" if bf16_supported("cpu") else "float32"  # dtype auto, resolved on this host
    assert fp.settings["explainer_engine"] == {"dtype": host, "max_model_len": 2048, "seed": 0}
    assert fp.settings["classifier_dtype"] == host
    assert fp.run == run_fingerprint(fp.models, fp.settings)
    off = precompute_fingerprint(cfg, cls, None)
    assert off.models["explainer"] is None and off.settings["explainer_engine"] is None


@pytest.mark.parametrize("bf16_host", [True, False])
def test_dtype_auto_is_fingerprinted_as_it_resolves_on_this_host(monkeypatch, bf16_host):
    """A CPU host with native bf16 runs ``dtype: auto`` in bfloat16, one without in float32
    (runtime.engine_kwargs, classifier_stage.load): a move between the two must not reuse the
    other precision's rows, so the run fingerprint records the resolved dtype, not "auto"."""
    cfg, cls, exp = _stages()
    assert exp.engine_kwargs["dtype"] == "auto" and cls.dtype == "auto"

    def fp_on(native_bf16: bool, cfg=cfg, cls=cls, exp=exp):
        monkeypatch.setattr("lantern_batch.classifier.bf16_supported", lambda device="cpu": native_bf16)
        return precompute_fingerprint(cfg, cls, exp)

    here, other = fp_on(bf16_host), fp_on(not bf16_host)
    want = "bfloat16" if bf16_host else "float32"
    # The same resolution the engine gets where it starts (inside the actor).
    monkeypatch.setattr("lantern_batch.classifier.bf16_supported", lambda device="cpu": bf16_host)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert engine_kwargs(exp.engine_kwargs)["dtype"] == want
    assert here.settings["explainer_engine"]["dtype"] == want
    assert here.settings["classifier_dtype"] == want
    assert here.run != other.run
    # An unset dtype is auto too; an explicit one is itself on either host.
    unset = dataclasses.replace(exp, engine_kwargs={k: v for k, v in exp.engine_kwargs.items() if k != "dtype"})
    assert fp_on(bf16_host, exp=unset).run == here.run
    explicit = dataclasses.replace(exp, engine_kwargs={**exp.engine_kwargs, "dtype": "float32"})
    fixed_cls = dataclasses.replace(cls, dtype="float32")
    assert fp_on(True, cls=fixed_cls, exp=explicit).run == fp_on(False, cls=fixed_cls, exp=explicit).run
    # Only the explainer's engine changing precision (classifier dtype fixed) still changes the run.
    assert fp_on(True, cls=fixed_cls).run != fp_on(False, cls=fixed_cls).run
    # An engine on a GPU keeps vLLM's own auto: the driver's CPU says nothing about it.
    gpu_cfg = cfg.model_copy(update={"explainer": cfg.explainer.model_copy(update={"num_gpus": 1})})
    gpu_cls = dataclasses.replace(fixed_cls, use_gpu=True)
    assert fp_on(True, cfg=gpu_cfg, cls=gpu_cls).settings["explainer_engine"]["dtype"] == "auto"
    assert fp_on(True, cfg=gpu_cfg, cls=gpu_cls).run == fp_on(False, cfg=gpu_cfg, cls=gpu_cls).run


@pytest.mark.parametrize("kwargs, expected", [
    ({"dtype": "bfloat16", "enforce_eager": True}, {"dtype": "bfloat16"}),
    ({}, {}),
    ({"max_model_len": 512, "quantization": "fp8", "kv_cache_memory_bytes": 1}, {"max_model_len": 512, "quantization": "fp8"}),
])
def test_engine_output_settings_keep_only_what_changes_outputs(kwargs, expected):
    assert engine_output_settings(kwargs) == expected
