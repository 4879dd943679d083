"""Publishing an exported model directory to its final place (local or ``s3://``).

A local target is replaced as a whole: the new directory is copied next to it, the old one is
renamed aside and the new one renamed into place, so a reader (precompute, vLLM) sees either the
old export or the new one, never a half-written mix.

S3 has no directory rename, so an S3 export is a set of immutable versions and a pointer::

    s3://bucket/models/classifier/
        CURRENT                        {"version": "20261202T171500.123456Z-1a2b3c4d"}: one PUT, the switch
        versions/<version>/...         a complete export, never written again

The new version is uploaded in full before ``CURRENT`` names it; only then are the other
versions (and files of the old flat layout) deleted, except the one ``CURRENT`` named before the
switch, which a reader may still be downloading (a fragment a crashed export left is deleted,
never kept in its place). A failure while deleting is a warning, never a failed export; an
unreadable ``CURRENT`` before the switch means no version is deleted that time.
:func:`lantern_batch.models.export_root` follows the pointer (and reads the flat layout of older
exports as before).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from lantern_batch import io
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)


def export_model(target: str, cfg: Any, metrics: dict[str, Any], write_model: Callable[[str], str | None],
                 meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one export of every trained model: ``write_model(dir)`` writes the weights and the
    tokenizer (and returns the model's version when it computes its own); then
    ``lantern_batch.json`` (``meta``, unless ``write_model`` wrote its own), ``metrics.json``
    (with the export's ``version``) and ``resolved_config.yaml`` are added and the directory is
    published to ``target`` (:func:`publish_dir`). Returns ``metrics``.
    """
    from lantern_batch.config import dump_config
    from lantern_batch.models import METADATA_FILE, model_version

    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        version = write_model(tmp)
        if meta is not None:
            with open(os.path.join(tmp, METADATA_FILE), "w") as f:
                json.dump(meta, f, indent=2, sort_keys=True)
        metrics["version"] = version or model_version(tmp)
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
        with open(os.path.join(tmp, "resolved_config.yaml"), "w") as f:
            f.write(dump_config(cfg))
        publish_dir(tmp, target)
    return metrics


def publish_dir(local_dir: str, target: str) -> str:
    """Copy the directory ``local_dir`` to ``target`` (replacing it); returns ``target``."""
    if io.is_s3(target):
        version = _publish_s3_version(local_dir, target)
        event(log, "export.published", target=target, version=version)
        return target
    else:
        target_abs = os.path.abspath(target)
        parent = os.path.dirname(target_abs)
        os.makedirs(parent, exist_ok=True)
        staging = os.path.join(parent, f".{os.path.basename(target_abs)}.{uuid.uuid4().hex[:8]}.new")
        shutil.copytree(local_dir, staging)
        old = None
        if os.path.exists(target_abs):
            old = os.path.join(parent, f".{os.path.basename(target_abs)}.{uuid.uuid4().hex[:8]}.old")
            os.rename(target_abs, old)
        os.rename(staging, target_abs)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    event(log, "export.published", target=target)
    return target


#: Versions kept on S3: the live one and the one the pointer named before it (a reader that
#: followed the old pointer just before the switch can still download it).
KEEP_VERSIONS = 2


def _publish_s3_version(local_dir: str, target: str) -> str:
    import pyarrow.fs as pafs

    from lantern_batch.models import EXPORT_POINTER, EXPORT_VERSIONS

    # The version live now, read before the switch: the one version cleanup must keep. Not
    # "the newest other version": a fragment a crashed export left is newer than the live one.
    try:
        previous: str | None = _pointed_version(target)
        known = True
    except Exception as exc:  # unreadable pointer: export anyway, delete no version this time
        previous, known = None, False
        log.warning("export.pointer_unreadable target=%s error=%s (no old version is deleted)",
                    target, type(exc).__name__)
    now = time.time()  # versions sort by upload time (microseconds), then a random suffix
    version = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}.{int(now * 1e6) % 1_000_000:06d}Z-{uuid.uuid4().hex[:8]}"
    fs, path = io.filesystem(io.join(target, EXPORT_VERSIONS, version))
    pafs.copy_files(os.path.abspath(local_dir), path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    io.write_text(io.join(target, EXPORT_POINTER), json.dumps({"version": version}) + "\n")
    try:
        _collect_old_versions(target, keep={version, previous} if known else None)
    except Exception as exc:  # the new export is live; stale versions are only storage
        log.warning("export.gc_failed target=%s error=%s", target, type(exc).__name__)
    return version


def _pointed_version(target: str) -> str | None:
    """The version ``CURRENT`` under ``target`` names; None when there is no pointer.

    Raises:
        OSError, ValueError, KeyError, TypeError: the pointer could not be read or parsed.
    """
    from lantern_batch.models import EXPORT_POINTER

    try:
        text = io.read_text(io.join(target, EXPORT_POINTER))
    except FileNotFoundError:
        return None
    version = json.loads(text)["version"]
    if not isinstance(version, str) or not version or "/" in version or version in (".", ".."):
        raise ValueError(f"{EXPORT_POINTER} names {version!r}, not a version folder")
    return version


def _collect_old_versions(target: str, keep: set[str | None] | None) -> None:
    """Delete every version not in ``keep`` (all are kept when ``keep`` is None), and the old
    flat layout's files."""
    import pyarrow.fs as pafs

    from lantern_batch.models import EXPORT_POINTER, EXPORT_VERSIONS

    fs, root = io.filesystem(target)
    entries = fs.get_file_info(pafs.FileSelector(root, recursive=False, allow_not_found=True))
    versions_root = f"{root}/{EXPORT_VERSIONS}"
    if keep is not None:
        for info in fs.get_file_info(pafs.FileSelector(versions_root, recursive=False, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and info.base_name not in keep:
                fs.delete_dir(info.path)
    for entry in entries:
        if entry.base_name in (EXPORT_POINTER, EXPORT_VERSIONS):
            continue
        if entry.type == pafs.FileType.Directory:
            fs.delete_dir(entry.path)
        else:
            fs.delete_file(entry.path)
