"""Paths, Parquet I/O and atomic publishing, on local disk and ``s3://`` alike.

Every path in a config may be local or ``s3://bucket/prefix``. S3 goes through pyarrow's
filesystem layer with credentials from the standard AWS chain (environment, shared files,
instance profile); an endpoint override (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``) points
it at any S3-protocol server. Credentials are never logged or written to outputs.

    table = read_table("s3://bucket/world/members")
    write_table(table, "runs/x/members")
"""

from __future__ import annotations

import os
import posixpath
import uuid
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lantern_batch.errors import InputError

S3_PREFIX = "s3://"


def is_s3(path: str) -> bool:
    """True for ``s3://`` (and ``s3a://``) URIs."""
    return str(path).startswith(("s3://", "s3a://"))


def join(base: str, *parts: str) -> str:
    """Join path parts for local paths and URIs alike."""
    base = str(base)
    if is_s3(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(base, *parts)


def s3_endpoint() -> str | None:
    """The S3 endpoint override from the environment, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@lru_cache(maxsize=8)
def _s3fs_for(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {}
    if endpoint:
        scheme = "https" if endpoint.startswith("https") else "http"
        kwargs["endpoint_override"] = endpoint.split("://", 1)[-1]
        kwargs["scheme"] = scheme
        kwargs["allow_bucket_creation"] = True
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def _s3_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def s3fs_filesystem():
    """An ``s3fs.S3FileSystem`` with the same endpoint and region as :func:`filesystem`.

    Used where fsspec features are needed (ETags in listings, conditional puts). Credentials come
    from the standard AWS chain inside botocore; nothing here reads or logs them.
    """
    import s3fs

    client_kwargs: dict[str, object] = {}
    endpoint = s3_endpoint()
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = _s3_region()
    if region:
        client_kwargs["region_name"] = region
    # skip_instance_cache: the cached instance would keep an endpoint from an earlier environment.
    return s3fs.S3FileSystem(client_kwargs=client_kwargs, skip_instance_cache=True)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``path`` and the path within it."""
    path = str(path)
    if is_s3(path):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return _s3fs_for(s3_endpoint(), region), path.split("://", 1)[1].rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(path)


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def makedirs(path: str) -> None:
    fs, p = filesystem(path)
    fs.create_dir(p, recursive=True)


def list_parquet_files(path: str) -> list[str]:
    """Parquet files under ``path`` (a file or a directory, recursively), sorted, as full paths.

    Files whose names start with ``_`` or ``.`` (``_SUCCESS``, staging dirs) are skipped.
    """
    fs, p = filesystem(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.File:
        return [str(path)]
    if info.type == pafs.FileType.NotFound:
        return []
    sel = pafs.FileSelector(p, recursive=True)
    files = []
    for fi in fs.get_file_info(sel):
        rel = fi.path[len(p):].lstrip("/")
        if fi.type != pafs.FileType.File or any(part.startswith(("_", ".")) for part in rel.split("/")):
            continue
        if fi.path.endswith(".parquet"):
            files.append(fi.path)
    prefix = "s3://" if is_s3(path) else ""
    return sorted(prefix + f for f in files)


def _dataset(path: str, table: str | None = None) -> pads.Dataset:
    files = list_parquet_files(path)
    if not files:
        what = f"table '{table}'" if table else "input"
        raise InputError(f"{what}: no Parquet files found at {path}")
    fs, _ = filesystem(path)
    return pads.dataset([filesystem(f)[1] for f in files], format="parquet", filesystem=fs)


def dataset_schema(path: str, table: str | None = None) -> pa.Schema:
    """Schema of a Parquet file or directory, read from the footers (no rows read)."""
    return _dataset(path, table).schema


def read_table(path: str, columns: list[str] | None = None, table: str | None = None) -> pa.Table:
    """Read a Parquet file or directory (every file under it) into one table."""
    return _dataset(path, table).to_table(columns=columns)


def write_table(table: pa.Table, directory: str, basename: str | None = None, **kwargs: object) -> str:
    """Write ``table`` as one Parquet file in ``directory``; returns the file's full path."""
    name = basename or f"part-{uuid.uuid4().hex[:12]}.parquet"
    target = join(directory, name)
    fs, p = filesystem(target)
    fs.create_dir(posixpath.dirname(p) if is_s3(target) else os.path.dirname(p), recursive=True)
    pq.write_table(table, p, filesystem=fs, compression=kwargs.pop("compression", "zstd"), **kwargs)  # type: ignore[arg-type]
    return target


def write_text(path: str, text: str) -> None:
    """Write a small text file (configs, manifests, markers)."""
    fs, p = filesystem(path)
    parent = posixpath.dirname(p) if is_s3(path) else os.path.dirname(p)
    if parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def read_text(path: str) -> str:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def delete_dir(path: str) -> None:
    """Delete a directory tree if it exists."""
    fs, p = filesystem(path)
    if fs.get_file_info(p).type != pafs.FileType.NotFound:
        fs.delete_dir(p)


def local_path(path: str) -> Path:
    """A local path as ``Path``; raises for remote URIs."""
    if is_s3(path):
        raise InputError(f"expected a local path, got a remote URI: {path}")
    return Path(path)


def ray_read_parquet(path: str, **kwargs: object):
    """``ray.data.read_parquet`` over the Parquet files at ``path`` (local or s3)."""
    import ray.data

    files = list_parquet_files(path)
    if not files:
        raise InputError(f"no Parquet files found at {path}")
    fs, _ = filesystem(path)
    return ray.data.read_parquet([filesystem(f)[1] for f in files], filesystem=fs, **kwargs)
