"""Publishing an exported model directory to its final place (local or ``s3://``).

A local target is replaced as a whole: the new directory is copied next to it, the old one is
renamed aside and the new one renamed into place, so a reader (precompute, vLLM) sees either the
old export or the new one, never a half-written mix. On S3 the files are uploaded under the
prefix after the old objects there are removed (S3 has no directory rename; readers of an S3
export should read it after the job finished).
"""

from __future__ import annotations

import os
import shutil
import uuid

from lantern_batch import io
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)


def publish_dir(local_dir: str, target: str) -> str:
    """Copy the directory ``local_dir`` to ``target`` (replacing it); returns ``target``."""
    if io.is_s3(target):
        import pyarrow.fs as pafs

        fs, path = io.filesystem(target)
        io.delete_dir(target)
        pafs.copy_files(os.path.abspath(local_dir), path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
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
