"""Paths, Parquet I/O, atomic publishing and partition locks, on local disk and ``s3://`` alike.

Every path in a config may be local or ``s3://bucket/prefix``. S3 goes through pyarrow's
``S3FileSystem`` with credentials from the standard AWS chain (environment, shared files,
instance profile); an endpoint override (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``) points
it at any S3-protocol server (moto in the tests, MinIO). ``LANTERN_S3_BACKEND=s3fs`` swaps in
s3fs behind the same pyarrow interface. Credentials are never logged or written to outputs.

    table = read_table("s3://bucket/world/members")
    write_table(table, "runs/x/members")

Published partitions (the precompute output contract) are written with
:func:`publish_partition` (one manifest per generation, ``_SUCCESS`` naming the live one) and
read with :func:`read_published` / :func:`published_files`; :func:`write_latest` moves
``_LATEST`` forward only, by compare-and-set; :class:`PartitionLock` keeps one run per partition
at a time. Ray workers that read S3 need the same endpoint and credentials:
:func:`lantern_batch.runtime.init_ray` passes the ``AWS_*`` variables that are set on to them.
"""

from __future__ import annotations

import fcntl
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lantern_batch.errors import (
    ConflictError,
    InputError,
    LanternError,
    LockHeldError,
    LockLostError,
    NotPublishedError,
)
from lantern_batch.logs import event, get_logger
from lantern_batch.schema import (
    INPUT_SCHEMAS,
    REQUIRED_COLUMNS,
    FileFooter,
    check_files,
    conform,
    unify_files,
)

log = get_logger(__name__)

S3_PREFIX = "s3://"

MANIFEST_PREFIX = "_manifest-"
MANIFEST_SUFFIX = ".json"
"""A generation's own manifest is ``_manifest-<run_id>.json`` (:func:`generation_manifest_name`)."""
MANIFEST = "_manifest.json"
"""A copy of the live generation's manifest, for readers that predate per-generation manifests."""
SUCCESS = "_SUCCESS"
"""Names the live run of a published partition; written last, the one atomic switch."""
LATEST = "_LATEST"


# --------------------------------------------------------------------------- paths, filesystems


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


def basename(path: str) -> str:
    """Last component of a local path or URI (trailing slashes ignored)."""
    return posixpath.basename(str(path).rstrip("/")) if is_s3(path) else os.path.basename(
        os.path.normpath(path)
    )


def parent(path: str) -> str:
    """Parent of a local path or URI."""
    path = str(path).rstrip("/")
    if is_s3(path):
        scheme, rest = path.split("://", 1)
        return f"{scheme}://" + posixpath.dirname(rest)
    return os.path.dirname(os.path.abspath(path))


def s3_endpoint() -> str | None:
    """The S3 endpoint override from the environment, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _s3_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def s3fs_filesystem():
    """An ``s3fs.S3FileSystem`` with the same endpoint and region as :func:`filesystem`.

    Used where fsspec features are needed (ETags in listings, conditional puts). Credentials come
    from the standard AWS chain inside botocore; nothing here reads or logs them.
    """
    return _s3fs_cached(s3_endpoint(), _s3_region(), os.environ.get("AWS_ACCESS_KEY_ID"))


@lru_cache(maxsize=8)
def _s3fs_cached(endpoint: str | None, region: str | None, _key_id: str | None):
    # Cached per environment: building a client costs ~0.1 s. _key_id only keys the cache.
    import s3fs

    client_kwargs: dict[str, object] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if region:
        client_kwargs["region_name"] = region
    # skip_instance_cache: s3fs's own cache ignores the environment we key on.
    # use_listings_cache=False: locks and manifests change under us; a cached listing would
    # hand back stale sizes and ETags.
    return s3fs.S3FileSystem(
        client_kwargs=client_kwargs, skip_instance_cache=True, use_listings_cache=False
    )


@lru_cache(maxsize=8)
def _s3_filesystem(
    backend: str, endpoint: str | None, region: str | None, _key_id: str | None
) -> pafs.FileSystem:
    # _key_id is only part of the cache key: a changed environment gets a fresh filesystem
    # (pyarrow resolves the credential chain when the filesystem is built).
    if backend == "s3fs":
        return pafs.PyFileSystem(pafs.FSSpecHandler(s3fs_filesystem()))
    kwargs: dict[str, object] = {}
    if endpoint:
        kwargs["endpoint_override"] = endpoint.split("://", 1)[-1]
        kwargs["scheme"] = "https" if endpoint.startswith("https") else "http"
        kwargs["allow_bucket_creation"] = True
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``path`` and the path within it (``bucket/key`` on S3)."""
    path = str(path)
    if is_s3(path):
        backend = os.environ.get("LANTERN_S3_BACKEND", "pyarrow").strip().lower() or "pyarrow"
        if backend not in ("pyarrow", "s3fs"):
            raise InputError(f"LANTERN_S3_BACKEND must be 'pyarrow' or 's3fs', got '{backend}'")
        fs = _s3_filesystem(backend, s3_endpoint(), _s3_region(), os.environ.get("AWS_ACCESS_KEY_ID"))
        return fs, path.split("://", 1)[1].rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(path)


def _uri(path: str, fs_path: str) -> str:
    """Turn a path inside the filesystem back into the caller's form (``s3://`` kept)."""
    return "s3://" + fs_path if is_s3(path) else fs_path


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def makedirs(path: str) -> None:
    """Create a local directory tree; a no-op on S3 (prefixes need no marker objects)."""
    if is_s3(path):
        return
    os.makedirs(os.path.abspath(path), exist_ok=True)


def list_dir(path: str) -> list[str]:
    """Names of the files directly inside ``path`` (not recursive), sorted; [] if it is absent."""
    fs, p = filesystem(path)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=False, allow_not_found=True))
    return sorted(posixpath.basename(fi.path) for fi in infos if fi.type == pafs.FileType.File)


def list_parquet_files(path: str) -> list[str]:
    """Parquet files under ``path`` (a file or a directory, recursively), sorted, as full paths.

    Files whose names start with ``_`` or ``.`` (``_SUCCESS``, staging files) are skipped. A
    published partition may hold two generations of files: read those with
    :func:`read_published` / :func:`published_files`, which follow ``_SUCCESS`` to the live
    generation's manifest.
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
        rel = fi.path[len(p) :].lstrip("/")
        if fi.type != pafs.FileType.File or any(
            part.startswith(("_", ".")) for part in rel.split("/")
        ):
            continue
        if fi.path.endswith(".parquet"):
            files.append(fi.path)
    return sorted(_uri(path, f) for f in files)


# --------------------------------------------------------------------------- Parquet and text


def _dataset(
    path: str | list[str], table: str | None = None, schema: pa.Schema | None = None
) -> pads.Dataset:
    files = list_parquet_files(path) if isinstance(path, str) else list(path)
    if not files:
        what = f"table '{table}'" if table else "input"
        raise InputError(f"{what}: no Parquet files found at {path}")
    fs, _ = filesystem(files[0])
    return pads.dataset(
        [filesystem(f)[1] for f in files], format="parquet", filesystem=fs, schema=schema
    )


def _footer(path: str, table: str | None) -> FileFooter:
    fs, p = filesystem(path)
    try:
        with fs.open_input_file(p) as fh:
            pf = pq.ParquetFile(fh)
            return FileFooter(path, pf.schema_arrow, pf.metadata.num_rows)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        what = f"table '{table}'" if table else "input"
        raise InputError(f"{what}: file {path} is not a Parquet file Arrow can read ({exc})") from None


def file_footers(path: str | list[str], table: str | None = None) -> list[FileFooter]:
    """The footer (schema, row count) of every Parquet file of a table, in file order; no
    rows are read. Footers are fetched in parallel (one request each on S3).

    Raises:
        InputError: no Parquet files, or a file that is not Parquet (named).
    """
    files = list_parquet_files(path) if isinstance(path, str) else list(path)
    if not files:
        what = f"table '{table}'" if table else "input"
        raise InputError(f"{what}: no Parquet files found at {path}")
    if len(files) == 1:
        return [_footer(files[0], table)]
    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        return list(pool.map(lambda f: _footer(f, table), files))


def dataset_schema(path: str, table: str | None = None) -> pa.Schema:
    """Schema of a Parquet file or directory, from every file's footer (no rows read).

    For an input table (``members``, ``jobs``, ``pairs``) every file is checked against its
    contract (:func:`lantern_batch.schema.check_files`) and the conformed schema is returned;
    for any other table the files' schemas are unified (:func:`~lantern_batch.schema.unify_files`).

    Raises:
        InputError: no files, a file that is not Parquet, an empty input table, a file whose
            columns break the contract or disagree with the other files (``SchemaError``).
    """
    footers = file_footers(path, table)
    if table in INPUT_SCHEMAS:
        return check_files(table, footers)
    return unify_files(table or "input", footers)


def read_table(path: str, columns: list[str] | None = None, table: str | None = None) -> pa.Table:
    """Read a Parquet file or directory (every file under it) into one table.

    An input table (``members``, ``jobs``, ``pairs``) is checked like :func:`dataset_schema`,
    then each file is conformed to the contract on its own (files may differ by safe
    widenings, null-typed or missing optional columns) and the parts are concatenated.
    """
    footers = file_footers(path, table)
    if table in INPUT_SCHEMAS:
        check_files(table, footers)
        out = pa.concat_tables([conform(_read_file(f, INPUT_SCHEMAS[table].names), table) for f in footers])
        return out.select(columns) if columns is not None else out
    schema = unify_files(table or "input", footers) if len(footers) > 1 else None
    return _dataset([f.path for f in footers], table, schema=schema).to_table(columns=columns)


def iter_input_batches(path: str, table: str, columns: list[str] | None = None,
                       batch_rows: int = 65_536) -> Iterator[pa.Table]:
    """The streaming form of :func:`read_table` for an input table (``members``, ``jobs``,
    ``pairs``): the same checks of every footer first, then conformed batches of at most
    ``batch_rows`` rows, file by file in order (only ``columns`` of them when given, read
    with the required columns that :func:`~lantern_batch.schema.conform` checks)."""
    footers = file_footers(path, table)
    check_files(table, footers)
    names = INPUT_SCHEMAS[table].names
    wanted = names if columns is None else [c for c in names if c in columns or c in REQUIRED_COLUMNS[table]]
    for footer in footers:
        fs, p = filesystem(footer.path)
        with fs.open_input_file(p) as fh:
            present = [c for c in wanted if c in footer.schema.names]
            for rb in pq.ParquetFile(fh).iter_batches(batch_size=batch_rows, columns=present):
                t = conform(pa.Table.from_batches([rb]), table)
                yield t if columns is None else t.select(columns)


def iter_table_batches(path: str, columns: list[str] | None = None, table: str | None = None,
                       batch_rows: int = 65_536) -> Iterator[pa.Table]:
    """The streaming form of :func:`read_table` for any other table (teacher labels, seed...):
    the files' schemas unified the same way, then batches of at most ``batch_rows`` rows in
    file and row order."""
    footers = file_footers(path, table)
    schema = unify_files(table or "input", footers) if len(footers) > 1 else None
    dataset = _dataset([f.path for f in footers], table, schema=schema)
    for rb in dataset.to_batches(columns=columns, batch_size=batch_rows):
        yield pa.Table.from_batches([rb])


class ParquetSink:
    """One Parquet file written from many tables (a row group or more per :meth:`write`), so a
    writer never holds more than one batch. The file appears at ``directory/basename`` only
    when the sink closes without an error: it is written under a hidden temporary name and then
    moved (a rename locally, a copy on S3). A sink that got no rows writes nothing.

        with ParquetSink(out, "part-00000.parquet", ERRORS_SCHEMA) as sink:
            for batch in ...:
                sink.write(errors_of(batch))
    """

    def __init__(self, directory: str, basename: str, schema: pa.Schema, compression: str = "zstd"):
        self.target = join(directory, basename)
        self.schema, self.compression = schema, compression
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp: str | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            fs, p = filesystem(self.target)
            directory, name = posixpath.split(p)
            fs.create_dir(directory, recursive=True)
            self._tmp = posixpath.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
            self._writer = pq.ParquetWriter(self._tmp, self.schema, filesystem=fs, compression=self.compression)
        self._writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def close(self) -> str | None:
        """Finish the file and move it into place; its path, or None when no row was written."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        fs, p = filesystem(self.target)
        fs.move(self._tmp, p)
        return self.target

    def abort(self) -> None:
        """Drop what was written (the target is left as it was)."""
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
                fs, _ = filesystem(self.target)
                try:
                    fs.delete_file(self._tmp)
                except FileNotFoundError:
                    pass

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _read_file(footer: FileFooter, columns: list[str]) -> pa.Table:
    """The given columns (those the file has) of one Parquet file."""
    fs, p = filesystem(footer.path)
    with fs.open_input_file(p) as fh:
        return pq.ParquetFile(fh).read(columns=[c for c in columns if c in footer.schema.names])


def write_table(table: pa.Table, directory: str, basename: str | None = None, **kwargs: Any) -> str:
    """Write ``table`` as one Parquet file in ``directory``; returns the file's full path.

    Locally the file is written under a hidden temporary name and renamed, so readers never
    see a half-written file; on S3 the object appears whole when its upload completes.
    """
    name = basename or f"part-{uuid.uuid4().hex[:12]}.parquet"
    target = join(directory, name)
    compression = kwargs.pop("compression", "zstd")
    if is_s3(target):
        fs, p = filesystem(target)
        pq.write_table(table, p, filesystem=fs, compression=compression, **kwargs)
        return target
    target = os.path.abspath(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        pq.write_table(table, tmp, compression=compression, **kwargs)
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return target


def write_text(path: str, text: str) -> None:
    """Write a small text file atomically (configs, manifests, markers).

    Local disk: a temporary file in the same directory, fsync, then ``os.replace`` — a reader
    sees the old content or the new, never a partial file. S3: one PUT, which is atomic.
    """
    data = text.encode()
    if is_s3(path):
        fs, p = filesystem(path)
        with fs.open_output_stream(p) as f:
            f.write(data)
        return
    target = os.path.abspath(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def read_text(path: str) -> str:
    """Read a small text file whole.

    On S3 this is one unranged GET, so the body is one version of the object. (pyarrow's S3
    input streams take the size from a HEAD and then GET byte ranges: an object replaced in
    between — a manifest being republished — comes back truncated or mixed.)
    """
    if is_s3(path):
        return s3fs_filesystem().cat_file(str(path).split("://", 1)[1]).decode()
    with open(os.path.abspath(path), "rb") as f:
        return f.read().decode()


def delete_file(path: str, missing_ok: bool = True) -> None:
    """Delete one file or object."""
    fs, p = filesystem(path)
    try:
        fs.delete_file(p)
    except FileNotFoundError:
        if not missing_ok:
            raise


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


def ray_read_parquet(path: str | list[str], **kwargs: Any):
    """``ray.data.read_parquet`` over the Parquet files at ``path`` (local or s3), or over an
    explicit list of files (e.g. :func:`published_files` of a partition)."""
    import ray.data

    files = list_parquet_files(path) if isinstance(path, str) else list(path)
    if not files:
        raise InputError(f"no Parquet files found at {path}")
    fs, _ = filesystem(files[0])
    return ray.data.read_parquet([filesystem(f)[1] for f in files], filesystem=fs, **kwargs)


def _tmp_sibling(target: str) -> str:
    # Hidden name in the same directory: same filesystem for os.replace, skipped by listings.
    directory, name = os.path.split(target)
    return os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- atomic publish


def part_name(run_id: str, index: int) -> str:
    """The run-unique data file name :func:`publish_partition` expects: ``part-<run>-00007.parquet``."""
    return f"part-{run_id}-{index:05d}.parquet"


def generation_manifest_name(run_id: str) -> str:
    """``_manifest-<run_id>.json``: the manifest of one generation of a partition."""
    return f"{MANIFEST_PREFIX}{run_id}{MANIFEST_SUFFIX}"


def _generation_of(name: str) -> str | None:
    """The run id in a ``_manifest-<run_id>.json`` file name; None for any other name."""
    if name.startswith(MANIFEST_PREFIX) and name.endswith(MANIFEST_SUFFIX):
        return name[len(MANIFEST_PREFIX) : -len(MANIFEST_SUFFIX)] or None
    return None


def publish_partition(final_dir: str, data_files: list[str], manifest: dict) -> dict:
    """Publish a partition directory whose data files are already written inside it.

    The layout (the precompute output contract; docs/OPERATIONS.md "Reading the outputs")::

        final_dir/part-<run_id>-00000.parquet ...   data files, run-unique names, never rewritten
        final_dir/_manifest-<run_id>.json           one manifest per generation, written once
        final_dir/_SUCCESS                          the live run id: the one atomic switch
        final_dir/_manifest.json                    a copy of the live manifest, for older readers

    Order of operations; a reader that follows the contract (read ``_SUCCESS``, then the
    manifest of the run it names, then exactly the files that manifest lists;
    :func:`read_published`) sees the old generation or the new one whole, never a mix, on
    local disk and on S3 alike, and after a crash at any step still reads one of them:

    1. The new run's data files are already complete under names no earlier run used (local
       files are renamed into place; S3 objects appear whole). Nothing lists them yet.
    2. ``_manifest-<run_id>.json`` is written (local: temp file + ``os.replace``; S3: one PUT).
       No reader follows it yet: ``_SUCCESS`` still names the old run, whose own manifest is
       untouched. (A partition published before per-generation manifests first gets its live
       ``_manifest.json`` copied to ``_manifest-<old run>.json``, so that generation keeps a
       manifest of its own once the copy in step 4 replaces ``_manifest.json``.)
    3. ``_SUCCESS`` is rewritten with the new run id: the switch, one atomic write. It is never
       removed first, so readers of a partition being republished never wait or fail.
    4. ``_manifest.json`` is replaced by a copy of the new manifest, for readers that predate
       per-generation manifests (between steps 3 and 4 they see ``_SUCCESS`` and
       ``_manifest.json`` disagree and retry, as they always did).
    5. Garbage collection, last and non-fatal (an error is logged as a warning; the publish
       stands): generation manifests other than the new one and the one it replaced are
       deleted, then every data file that no remaining manifest lists. The previous
       generation stays, so a slow reader that read the old ``_SUCCESS`` just before step 3
       still finds every file; a reader slower than two publishes gets FileNotFound and
       retries against the current ``_SUCCESS``.

    An error at step 2 or 3 raises and leaves the previous generation live and whole; at step 4
    it raises with the new generation already live (readers that follow ``_SUCCESS`` read it;
    older ones report a torn publish until a rerun). What a caller may delete afterwards is
    decided by the partition's state, never by how far the call got: see
    :func:`referenced_files` and :func:`live_run_id`.

    Args:
        final_dir: The partition directory (local or ``s3://``), e.g. ``OUT/scores/ds=2026-11-24``.
        data_files: Full paths of this run's data files; each must sit directly in ``final_dir``
            under a name that no published generation uses (put the run id in it).
        manifest: The manifest; must hold ``run_id``. ``files`` (the data files' basenames,
            sorted) is added.

    Returns:
        The manifest as written.

    Raises:
        ValueError: no ``run_id`` (or one with spaces or ``/``), a data file outside
            ``final_dir`` or missing, or a name that the live manifest already lists under
            another run.
    """
    run_id = _checked_run_id(manifest)
    final_dir = str(final_dir).rstrip("/")
    names = _data_file_names(final_dir, data_files)
    present = set(list_dir(final_dir))
    missing = sorted(set(names) - present)
    if missing:
        raise ValueError(f"publish_partition: {len(missing)} data files missing, e.g. {missing[0]}")

    replaced = _replaced_generation(final_dir, run_id)
    if replaced is not None:
        reused = sorted(set(replaced.get("files", [])) & set(names))
        if reused:
            raise ValueError(
                f"publish_partition: {len(reused)} data file names (e.g. {reused[0]}) are already "
                f"published by run {replaced['run_id']}; data file names must be run-unique"
            )
        if generation_manifest_name(replaced["run_id"]) not in present:
            _write_manifest(join(final_dir, generation_manifest_name(replaced["run_id"])), replaced)

    written = {**manifest, "run_id": run_id, "files": sorted(names)}
    _write_manifest(join(final_dir, generation_manifest_name(run_id)), written)
    write_text(join(final_dir, SUCCESS), run_id + "\n")  # the switch
    _write_manifest(join(final_dir, MANIFEST), written)

    keep = {run_id} | ({replaced["run_id"]} if replaced is not None else set())
    removed = _collect_garbage_nonfatal(final_dir, run_id, keep)
    event(log, "publish.done", dir=final_dir, run_id=run_id, files=len(names),
          kept_previous=len(replaced.get("files", [])) if replaced else 0,
          removed=removed if removed is not None else 0, gc="ok" if removed is not None else "failed")
    return written


def _checked_run_id(manifest: dict) -> str:
    run_id = str(manifest.get("run_id") or "")
    if not run_id or any(c.isspace() for c in run_id) or "/" in run_id:
        raise ValueError("publish_partition: manifest needs a non-empty run_id without spaces or '/'")
    return run_id


def _data_file_names(final_dir: str, data_files: list[str]) -> list[str]:
    names = []
    for f in data_files:
        if parent(f).rstrip("/") != parent(join(final_dir, "x")).rstrip("/"):
            raise ValueError(f"publish_partition: data file {f} is not directly in {final_dir}")
        name = basename(f)
        if name.startswith(("_", ".")):
            raise ValueError(f"publish_partition: data file name {name} starts with '_' or '.'")
        names.append(name)
    return names


def _replaced_generation(final_dir: str, run_id: str) -> dict | None:
    """The live manifest that a publish of ``run_id`` replaces (None: none, or ``run_id`` itself)."""
    live = live_run_id(final_dir)
    if live is None or live == run_id:
        return None
    return _manifest_of(final_dir, live)


def _write_manifest(path: str, manifest: dict) -> None:
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str))


def _collect_garbage_nonfatal(final_dir: str, run_id: str, keep_runs: set[str]) -> int | None:
    """:func:`collect_garbage`, an error logged as a warning; the count removed, None on error."""
    try:
        return collect_garbage(final_dir, keep_runs)
    except Exception as exc:  # noqa: BLE001 - the publish stands; the next one collects again
        log.warning(
            "publish.gc_failed dir=%s run_id=%s error=%s detail=%s: run %s is published; "
            "leftover files are collected by the next publish",
            final_dir, run_id, type(exc).__name__, str(exc)[:300], run_id,
        )
        return None


def collect_garbage(final_dir: str, keep_runs: set[str]) -> int:
    """Delete the generations of ``final_dir`` other than ``keep_runs``; returns files deleted.

    Their ``_manifest-<run>.json`` go first, then every data file that no remaining manifest
    lists (:func:`referenced_files`): a crash in between leaves unlisted files, which the next
    collection deletes, never a listed file that is gone. The run ``_SUCCESS`` names is always
    kept, whatever ``keep_runs`` says.
    """
    keep = set(keep_runs) | ({live} if (live := live_run_id(final_dir)) else set())
    names = list_dir(final_dir)
    removed = 0
    for name in names:
        generation = _generation_of(name)
        if generation is not None and generation not in keep:
            delete_file(join(final_dir, name))
            removed += 1
    referenced = referenced_files(final_dir)
    for name in names:
        if name.startswith(("_", ".")) or name in referenced:
            continue
        delete_file(join(final_dir, name))
        removed += 1
    return removed


def referenced_files(final_dir: str) -> set[str]:
    """Names of the data files that some manifest in ``final_dir`` lists.

    Every ``_manifest-<run>.json`` counts (the live generation's, the previous one kept for
    slow readers, one a crashed run wrote before its switch) and so does ``_manifest.json``.
    Nothing outside this set is read by anyone who follows the contract, so only files
    outside it may be deleted (GC, a failed run's cleanup).

    Raises:
        ValueError: a manifest that is not valid JSON (deciding what to delete without it
            would be a guess).
    """
    final_dir = str(final_dir).rstrip("/")
    out: set[str] = set()
    for name in list_dir(final_dir):
        if name != MANIFEST and _generation_of(name) is None:
            continue
        manifest = read_json(join(final_dir, name))
        if manifest is not None:
            out.update(str(f) for f in manifest.get("files", []))
    return out


def live_run_id(final_dir: str) -> str | None:
    """The run id ``final_dir/_SUCCESS`` names (the live generation), or None when unpublished."""
    try:
        return read_text(join(str(final_dir).rstrip("/"), SUCCESS)).strip() or None
    except FileNotFoundError:
        return None


def read_json(path: str) -> dict | None:
    """A small JSON object file; None when it does not exist.

    Raises:
        ValueError: the file is not a JSON object.
    """
    try:
        text = read_text(path)
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def _manifest_of(final_dir: str, run_id: str) -> dict | None:
    """The manifest of generation ``run_id``: its ``_manifest-<run>.json``, or for a partition
    published before per-generation manifests, ``_manifest.json`` if that names the run.

    None when neither does: a publish by an older version between its two writes, or a
    generation that a newer publish garbage-collected under a slow reader; retry from
    ``_SUCCESS``. An unreadable file counts as absent (the caller retries, then reports).
    """
    for name in (generation_manifest_name(run_id), MANIFEST):
        try:
            manifest = read_json(join(final_dir, name))
        except ValueError:
            manifest = None
        if manifest is not None and str(manifest.get("run_id")) == run_id:
            return manifest
    return None


def published_files(
    final_dir: str, wait_s: float = 0, *, poll_s: float = 0.2, torn_grace_s: float = 10.0
) -> tuple[dict, list[str]]:
    """The manifest of a published partition's live generation and the full paths of its files.

    Follows the contract: waits up to ``wait_s`` for ``_SUCCESS``; reads the manifest of the
    run it names (``_manifest-<run>.json``, or ``_manifest.json`` in partitions published
    before per-generation manifests); retries while that manifest cannot be found (given at
    least ``torn_grace_s`` to settle). Use this to hand a partition to Ray Data
    (``ray_read_parquet(files)``); :func:`read_published` reads it in the driver.

    Raises:
        NotPublishedError: no ``_SUCCESS`` after ``wait_s``, or a ``_SUCCESS`` whose run has
            no manifest for longer than ``torn_grace_s``.
    """
    final_dir = str(final_dir).rstrip("/")
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        success = live_run_id(final_dir)
        manifest = _manifest_of(final_dir, success) if success is not None else None
        if manifest is not None:
            return manifest, [join(final_dir, n) for n in manifest.get("files", [])]
        if success is None:
            if elapsed >= wait_s:
                raise NotPublishedError(f"{final_dir} is not published (no {SUCCESS})")
        elif elapsed >= max(wait_s, torn_grace_s):
            raise NotPublishedError(
                f"{final_dir}: {SUCCESS} names run {success} but neither "
                f"{generation_manifest_name(success)} nor {MANIFEST} is that run's manifest; a "
                "publish is in progress or was interrupted (rerun the job for this partition)"
            )
        time.sleep(poll_s)


def read_published(
    final_dir: str,
    wait_s: float = 0,
    *,
    columns: list[str] | None = None,
    schema: pa.Schema | None = None,
    poll_s: float = 0.2,
    torn_grace_s: float = 10.0,
) -> pa.Table:
    """Read a published partition the way the contract says readers must.

    Waits for ``_SUCCESS`` (up to ``wait_s``), reads the manifest of the run it names
    (:func:`published_files`), reads exactly the files that manifest lists, and retries from
    the top if one of them has been garbage-collected by a newer publish.

    Args:
        final_dir: The partition directory.
        wait_s: How long to wait for ``_SUCCESS`` to appear.
        columns: Columns to read (all by default).
        schema: Schema of the result when the manifest lists no files (else an empty table
            without columns is returned), and the schema files are read with.
        poll_s: Sleep between retries.
        torn_grace_s: How long the live run's manifest may be missing before giving up.

    Raises:
        NotPublishedError: not published within ``wait_s``, or no manifest for the live run
            for longer than ``torn_grace_s``.
    """
    start = time.monotonic()
    while True:
        remaining = max(0.0, wait_s - (time.monotonic() - start))
        manifest, files = published_files(
            final_dir, remaining, poll_s=poll_s, torn_grace_s=torn_grace_s
        )
        if not files:
            return schema.empty_table() if schema is not None else pa.table({})
        try:
            table = _dataset(files, schema=schema).to_table(columns=columns)
        except FileNotFoundError:
            # A newer publish garbage-collected this generation while we read it.
            if time.monotonic() - start > max(wait_s, torn_grace_s):
                raise
            time.sleep(poll_s)
            continue
        return table


# --------------------------------------------------------------------------- _LATEST


def write_latest(base: str, ds: str, *, attempts: int = 20) -> str:
    """Point ``base/_LATEST`` at ``ds`` unless it already names a newer ds; returns what it names.

    ``_LATEST`` never moves backwards (``YYYY-MM-DD`` strings sort by date), also when two
    publishes call this at once: the read-compare-write is a compare-and-set — under an
    exclusive ``flock`` of ``base/_locks/_LATEST.flock`` on local disk, and a conditional PUT
    (``If-Match`` the ETag that was read, ``If-None-Match: *`` when there was none) on S3,
    retried up to ``attempts`` times when another writer got in between.

    Raises:
        NotPublishedError: ``base/ds=<ds>`` is not published, or its live manifest lists a
            file that is missing: ``_LATEST`` only ever names a readable partition.
        ConflictError: every attempt lost to a concurrent writer (S3).
    """
    ds = str(ds).strip()
    if not ds:
        raise ValueError("write_latest: empty ds")
    check_readable(join(base, f"ds={ds}"))
    if is_s3(base):
        return _advance_latest_s3(base, ds, attempts)
    return _advance_latest_local(base, ds)


def check_readable(final_dir: str) -> dict:
    """The live manifest of ``final_dir``, after checking that every file it lists exists.

    Raises:
        NotPublishedError: not published, no manifest for the live run, or a listed file
            missing.
    """
    manifest, files = published_files(final_dir, torn_grace_s=0)
    present = set(list_dir(final_dir))
    missing = sorted(n for n in (basename(f) for f in files) if n not in present)
    if missing:
        raise NotPublishedError(
            f"{final_dir}: the live manifest (run {manifest.get('run_id')}) lists "
            f"{len(missing)} data files that do not exist, e.g. {missing[0]}; the partition is "
            "not readable (rerun the job for this partition)"
        )
    return manifest


def read_latest(base: str) -> str | None:
    """The ds named by ``base/_LATEST``, or None when nothing has been published."""
    try:
        return read_text(join(base, LATEST)).strip() or None
    except FileNotFoundError:
        return None


def _newer(ds: str, current: str | None) -> str:
    return max(ds, current) if current else ds


def _advance_latest_local(base: str, ds: str) -> str:
    lock_path = os.path.abspath(join(base, "_locks", "_LATEST.flock"))
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        current = read_latest(base)
        newest = _newer(ds, current)
        if newest != current:
            write_text(join(base, LATEST), newest + "\n")
    return newest


def _advance_latest_s3(base: str, ds: str, attempts: int) -> str:
    path = join(base, LATEST)
    current: str | None = None
    for attempt in range(attempts):
        # ETag first: if the object changes before the body is read, the PUT conditioned on
        # this ETag fails and we read again, which is the safe outcome.
        etag = _s3_etag(path)
        current = read_latest(base)
        newest = _newer(ds, current)
        if newest == current:
            return newest
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            _s3_put(path, (newest + "\n").encode(), **condition)
            return newest
        except (FileExistsError, FileNotFoundError):
            time.sleep(min(1.0, 0.02 * 2**attempt))  # another writer got in between: read again
    raise ConflictError(
        f"{path}: {attempts} compare-and-set attempts to name ds {ds} lost to concurrent "
        f"writers; it still names {current}"
    )


def _s3_etag(uri: str) -> str | None:
    """The ETag of an S3 object, or None when it does not exist."""
    try:
        return s3fs_filesystem().info(uri.split("://", 1)[1])["ETag"]
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- partition lock


@lru_cache(maxsize=1)
def _process_identity() -> dict[str, str]:
    """What tells two processes with one host name apart (Linux): the boot and the pid namespace
    (two containers, or host-network pods, can share a host name but never both of these)."""
    ident: dict[str, str] = {}
    try:
        ident["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ident["pid_ns"] = os.readlink("/proc/self/ns/pid")
    except OSError:
        return {}
    return ident


def _holder_is_dead(content: dict) -> bool:
    """A lock's holder ran on this host, in this boot and pid namespace, and its process is gone
    (a run killed with SIGKILL, or one whose host rebooted): its lock need not wait out the ttl.
    Anything unknown (another host, no pid, no identity recorded) counts as alive."""
    mine = _process_identity()
    if not mine or content.get("host") != socket.gethostname() or not content.get("boot_id"):
        return False
    if content["boot_id"] != mine["boot_id"]:
        return True  # rebooted since: nothing of that boot runs
    pid = content.get("pid")
    if content.get("pid_ns") != mine["pid_ns"] or not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, someone else's
        return False
    return False


class PartitionLock:
    """One run per partition at a time: a lock file/object with an owner and a time to live.

    Local disk: created with ``os.open(O_CREAT | O_EXCL)``, which fails if the file exists.
    S3: a conditional ``PutObject`` with ``If-None-Match: *`` (AWS S3 since 2024; moto_server
    supports it), which fails with 412 if the object exists. Either way exactly one contender
    creates the lock.

    A lock older than its holder's ``ttl_s`` (both recorded in the lock; a lock without them
    ages by file time and the contender's ``ttl_s``) is stale: its holder is presumed dead, and
    the lock is broken with a logged warning. So is a younger lock whose holder provably is: it
    ran on this host (same boot, same pid namespace) and its pid no longer exists, so a run
    killed with SIGKILL does not block the next run on the machine for ``ttl_s``. Breaking is itself atomic —
    locally the stale file is renamed away (one contender wins; a contender that finds it moved
    a fresh lock puts it back and gives up), on S3 the stale object is overwritten with
    ``If-Match: <its ETag>``. Long runs keep the lock fresh with :meth:`refresh`.

    Release deletes the lock only if this holder still owns it (its token is in it). On S3 the
    read-then-delete is two requests; a contender can slip in between only after the lock has
    gone stale, which :meth:`refresh` prevents.

        with PartitionLock(join(out, "scores", "_locks", f"ds={ds}.lock"), owner=run_id, ttl_s=6 * 3600):
            ... write and publish ds ...

    Raises:
        LockHeldError: on enter, when another live holder has the lock.
    """

    def __init__(self, lock_path: str, owner: str, ttl_s: float):
        self.lock_path = str(lock_path)
        self.owner = str(owner)
        self.ttl_s = float(ttl_s)
        self.token = uuid.uuid4().hex
        self._etag: str | None = None
        self.held = False

    # -- public API

    def acquire(self) -> PartitionLock:
        """Take the lock (breaking a stale one); raises :class:`LockHeldError` when held."""
        for _ in range(3):  # create; on a stale lock, break it and create again
            if self._create():
                self.held = True
                event(log, "lock.acquired", path=self.lock_path, owner=self.owner)
                return self
            info = self._read()
            if info is None:  # released between our attempt and the read: try again
                continue
            content, etag = info
            age = time.time() - float(content.get("created_at", 0))
            # The holder's own ttl decides (it knows how long it may hold); ours if it wrote none.
            ttl = float(content.get("ttl_s", self.ttl_s))
            dead = age <= ttl and _holder_is_dead(content)
            if age <= ttl and not dead:
                raise LockHeldError(
                    f"{self.lock_path} is held by {content.get('owner', '?')} "
                    f"(host {content.get('host', '?')}, pid {content.get('pid', '?')}, "
                    f"{age:.0f} s old, ttl {ttl:.0f} s); another run is writing this partition"
                )
            log.warning(
                "lock.stale_broken path=%s previous_owner=%s age_s=%.0f ttl_s=%.0f%s",
                self.lock_path, content.get("owner", "?"), age, ttl,
                f" (its process {content.get('pid')} on this host is gone)" if dead else "",
            )
            if self._take_over(content, etag):
                self.held = True
                event(log, "lock.acquired", path=self.lock_path, owner=self.owner, broke_stale=1)
                return self
        raise LockHeldError(f"{self.lock_path}: could not acquire the lock (contended)")

    def refresh(self) -> None:
        """Renew ``created_at`` so a long run's lock does not go stale.

        Raises:
            LockHeldError: the lock is no longer ours (broken as stale, or overwritten).
            OSError: a transient storage error; the lock may still be ours (retry).
        """
        if not self.held:
            raise LockHeldError(f"{self.lock_path}: refresh without holding the lock")
        info = self._read()  # an OSError here is transient: the caller retries
        if info is None or info[0].get("token") != self.token:
            self.held = False
            raise LockHeldError(f"{self.lock_path}: the lock was lost (broken as stale?)")
        body = self._body()
        if is_s3(self.lock_path):
            try:
                self._etag = _s3_put(self.lock_path, body, IfMatch=info[1])
            except FileExistsError as exc:  # 412: someone else's lock now
                self.held = False
                raise LockHeldError(f"{self.lock_path}: the lock was lost during refresh") from exc
        else:
            write_text(self.lock_path, body.decode())

    def release(self) -> None:
        """Delete the lock if this holder still owns it."""
        if not self.held:
            return
        self.held = False
        info = self._read()
        if info is None or info[0].get("token") != self.token:
            log.warning("lock.lost path=%s owner=%s", self.lock_path, self.owner)
            return
        delete_file(self.lock_path)
        event(log, "lock.released", path=self.lock_path, owner=self.owner)

    def __enter__(self) -> PartitionLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals

    def _body(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "token": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **_process_identity(),
                "created_at": time.time(),
                "ttl_s": self.ttl_s,
            }
        ).encode()

    def _create(self) -> bool:
        body = self._body()
        if is_s3(self.lock_path):
            try:
                self._etag = _s3_put(self.lock_path, body, IfNoneMatch="*")
                return True
            except FileExistsError:
                return False
        path = os.path.abspath(self.lock_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _read(self) -> tuple[dict, str | None] | None:
        """(content, etag) of the current lock, or None if there is none."""
        if is_s3(self.lock_path):
            fs = s3fs_filesystem()
            key = self.lock_path.split("://", 1)[1]
            try:
                # ETag first: if the object changes before we read the body, the conditional
                # takeover with this ETag fails, which is the safe outcome.
                etag = fs.info(key)["ETag"]
                raw = fs.cat_file(key)
            except FileNotFoundError:
                return None
            return _parse_lock(raw, None), etag
        path = os.path.abspath(self.lock_path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return None
        # A lock whose holder died between create and write is empty: age it by mtime.
        return _parse_lock(raw, mtime), None

    def _take_over(self, stale: dict, etag: str | None) -> bool:
        if is_s3(self.lock_path):
            try:
                self._etag = _s3_put(self.lock_path, self._body(), IfMatch=etag)
                return True
            except (FileExistsError, OSError):
                return False  # someone else broke or refreshed it first
        path = os.path.abspath(self.lock_path)
        moved = f"{path}.stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, moved)
        except FileNotFoundError:
            return False  # another contender broke it; the create loop decides
        with open(moved, "rb") as f:
            got = _parse_lock(f.read(), os.stat(moved).st_mtime)
        if got.get("token") != stale.get("token") or got.get("created_at") != stale.get(
            "created_at"
        ):
            # We moved a lock that another contender had just created: give it back.
            try:
                os.link(moved, path)
            except FileExistsError:
                pass
            os.unlink(moved)
            return False
        os.unlink(moved)
        return self._create()


class LockKeeper:
    """Holds a :class:`PartitionLock` for a whole run: waits up to ``wait_s`` for it, refreshes
    it in the background every ``ttl_s / 3`` and lets it go at the end.

    * An error while refreshing is taken as transient (an ``OSError``, or a botocore error that
      s3fs passes through unconverted, such as ``EndpointConnectionError``) and retried (with
      backoff) for as long as the lock cannot have gone stale; only then, or when the lock is
      found to be someone else's, is it lost. A lost lock stops the run at once:
      :class:`LockLostError` is raised in the thread that holds the lock, instead of the run
      working on for hours and finding out at publish. :attr:`lost` is also there for a last check before publishing.
    * Letting the lock go is best effort: any failure there is a warning, so a run that published
      still exits 0 (the lock goes stale after ``ttl_s``).
    * On S3 the lock relies on conditional writes; an endpoint that accepts a second
      ``If-None-Match: *`` create of the same key ignores them, and the keeper refuses to run
      there (two holders would otherwise be possible).

        with LockKeeper(join(out, "_locks", "synthesize.lock"), owner=run_id, ttl_s=900, what="synthesize"):
            ...
    """

    def __init__(self, lock_path: str, owner: str, ttl_s: float, wait_s: float = 0.0, what: str = "run"):
        self.lock = PartitionLock(lock_path, owner=owner, ttl_s=ttl_s)
        self.wait_s = float(wait_s)
        self.what = what
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner_thread: int | None = None

    def __enter__(self) -> LockKeeper:
        self._owner_thread = threading.get_ident()
        if is_s3(self.lock.lock_path):
            require_conditional_writes(self.lock.lock_path)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                self.lock.acquire()
                break
            except LockHeldError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._keep, daemon=True, name=f"{self.what}-lock")
        self._thread.start()
        return self

    def _keep(self) -> None:
        every = max(0.5, min(self.lock.ttl_s / 3, 600.0))
        last_ok = time.monotonic()
        wait = every
        while not self._stop.wait(wait):
            try:
                self.lock.refresh()
                last_ok, wait = time.monotonic(), every
            except LockHeldError as exc:
                return self._lose(str(exc))
            except Exception as exc:
                # Anything else is transient: OSError, and what s3fs passes through unconverted
                # (botocore's EndpointConnectionError, HTTPClientError, ... are not OSErrors); an
                # escaping exception would end this thread silently and the lock would go stale
                # with ``lost`` still False. Still ours until the lease runs out: retry well
                # before that.
                if time.monotonic() - last_ok > self.lock.ttl_s * 2 / 3:
                    return self._lose(f"{self.lock.lock_path}: refresh kept failing ({type(exc).__name__})")
                wait = min(every, max(0.2, wait / 2))
                log.warning("lock.refresh_retry path=%s error=%s", self.lock.lock_path, type(exc).__name__)

    def _lose(self, why: str) -> None:
        import ctypes

        self.lost = True
        log.error("lock.lost what=%s reason=%s", self.what, why)
        if not self._stop.is_set() and self._owner_thread is not None:
            # Stop the run now: LockLostError is raised in the thread that holds the lock at its
            # next bytecode. Not a SIGINT: other libraries (Ray Train) install SIGINT handlers.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._owner_thread),
                                                       ctypes.py_object(LockLostError))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.lock.release()
        except Exception as release_exc:  # any error (botocore's too): a run that published exits 0
            log.warning("lock.release_failed path=%s error=%s (it goes stale after %.0f s)",
                        self.lock.lock_path, type(release_exc).__name__, self.lock.ttl_s)
        if self.lost and exc_type is LockLostError and not str(exc):
            raise LockLostError(f"{self.what}: lost the lock {self.lock.lock_path} during the run; "
                                "stopped (another run may be writing the same output)") from exc
        return False


_CONDITIONAL_OK: set[str] = set()


def require_conditional_writes(uri: str) -> None:
    """Refuse an S3 endpoint that ignores ``If-None-Match: *`` (checked once per bucket):
    create a probe object twice under the lock's prefix; the second create must fail."""
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    key = (s3_endpoint() or "aws", bucket)
    if "|".join(key) in _CONDITIONAL_OK:
        return
    probe = join(parent(uri), f".conditional-probe-{uuid.uuid4().hex}")
    try:
        _s3_put(probe, b"probe", IfNoneMatch="*")
        try:
            _s3_put(probe, b"probe", IfNoneMatch="*")
        except FileExistsError:
            _CONDITIONAL_OK.add("|".join(key))
            return
        raise LanternError(
            f"the S3 endpoint {s3_endpoint() or 'AWS'} accepted a second If-None-Match create of "
            f"{probe}: it ignores conditional writes, so locks under s3://{bucket} cannot keep two "
            "runs apart; refusing to run (use an endpoint with conditional writes, e.g. AWS S3, "
            "MinIO >= 2024, moto >= 5)")
    finally:
        delete_file(probe)


def _parse_lock(raw: bytes, mtime: float | None) -> dict:
    try:
        content = json.loads(raw.decode() or "{}")
        if not isinstance(content, dict):
            content = {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        content = {}
    if "created_at" not in content:
        content["created_at"] = mtime if mtime is not None else 0.0
    return content


def _s3_put(uri: str, body: bytes, **conditions: str | None) -> str | None:
    """One PutObject with conditional headers (``IfNoneMatch``/``IfMatch``); returns the ETag.

    Raises:
        FileExistsError: the condition failed (HTTP 412).
    """
    fs = s3fs_filesystem()
    key = uri.split("://", 1)[1]
    bucket, _, obj_key = key.partition("/")
    kwargs = {k: v for k, v in conditions.items() if v is not None}
    try:
        resp = fs.call_s3("put_object", Bucket=bucket, Key=obj_key, Body=body, **kwargs)
    except FileExistsError:
        raise
    except OSError as exc:
        if "Precondition" in str(exc) or "412" in str(exc) or getattr(exc, "errno", None) == 22:
            raise FileExistsError(str(exc)) from exc
        raise
    fs.invalidate_cache(key)
    return resp.get("ETag") if isinstance(resp, dict) else None
