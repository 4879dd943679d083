"""Ray Train wiring shared by every trainer: TorchTrainer, checkpoints, resume, DeepSpeed.

Driver side, :func:`fit` builds a ``TorchTrainer`` from the job's :class:`TrainSettings`
(``ScalingConfig`` from ``train.scaling``; ``RunConfig`` with ``storage_path`` — local or
``s3://`` through pyarrow's filesystem — ``CheckpointConfig`` and ``FailureConfig``), passes the
training split as a Ray Dataset (streamed and split per worker by Ray Train) and returns the
result. Rerunning a job with the same run name resumes from the run's latest checkpoint: Ray
Train restores the run state from storage and :func:`restore` hands the checkpoint to the loop.

Worker side, the loops use :func:`worker_setup`, :class:`StepLoop` (micro-batches → optimizer
steps, progress lines, periodic checkpoints, skip-ahead after a resume) and
:func:`build_engine` (DDP via ``ray.train.torch.prepare_model``, or a DeepSpeed ZeRO engine).

Checkpoint layout (one directory per report)::

    trainer_state.json    rank 0: step, epoch, micro-batches into the epoch, samples seen
    model.pt              rank 0: the unwrapped model's (trainable) state dict
    optimizer.pt          rank 0 (DDP): optimizer + scheduler state
    ds/                   DeepSpeed: every rank's ZeRO shards (engine.save_checkpoint)
    files.rank<r>.json    every rank that wrote files: their relative paths, sizes and sha256,
                          the step and the training data's fingerprint

Resume after a kill. Ray Train resumes from the checkpoints its controller has registered in
the run's ``checkpoint_manager_snapshot.json``; a worker uploads a checkpoint first and the
controller registers it only when it next polls the workers (every 2 s) — a process killed in
between leaves a complete checkpoint on storage that Ray's snapshot does not list (before the
first registration there is no snapshot at all, and the rerun would start from step 0).
:func:`restore` therefore also scans the run directory and takes the newest *complete*
checkpoint (every ``files.rank<r>.json`` present, every file it lists present with its size)
when it is newer than the one Ray hands back, and only one written for the same training data.

Nothing is unpickled from storage unverified: before a restore every file is checked against
its manifest's sha256, and our own files load with ``torch.load(weights_only=True)`` (tensors
and plain containers only). DeepSpeed's loader unpickles its shards itself; the hash check is
what guards those.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lantern_batch import io
from lantern_batch.errors import InputError
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)

STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.pt"
OPTIM_FILE = "optimizer.pt"
DS_DIR = "ds"
MANIFEST_PREFIX = "files.rank"


# ---------------------------------------------------------------------------------------------
# Driver side


def run_storage(storage_path: str) -> tuple[str, Any]:
    """``(path, pyarrow filesystem)`` for ``RunConfig``: local paths made absolute, ``s3://``
    resolved through :func:`lantern_batch.io.filesystem` (honours the endpoint override)."""
    if io.is_s3(storage_path):
        fs, path = io.filesystem(storage_path)
        return path, fs
    return os.path.abspath(storage_path), None


def run_dir(storage_path: str, run_name: str) -> str:
    """Where a run's checkpoints live."""
    return io.join(storage_path, run_name)


def steps_plan(num_train: int, train: Any, num_workers: int) -> dict[str, int]:
    """Optimizer steps per epoch and in total for ``num_train`` examples.

    Ray Train splits the training set into equal shards (``equal=True``), so every worker runs
    the same number of micro-batches — DDP and ZeRO need that to not hang.
    """
    rows_per_worker = max(1, num_train // num_workers)
    micro_per_epoch = max(1, math.ceil(rows_per_worker / train.batch_size))
    steps_per_epoch = max(1, micro_per_epoch // train.grad_accum)
    total = max(1, math.ceil(train.epochs * steps_per_epoch))
    if train.max_steps:
        total = min(total, int(train.max_steps))
    return {"rows_per_worker": rows_per_worker, "micro_per_epoch": micro_per_epoch,
            "steps_per_epoch": steps_per_epoch, "total_steps": total}


def fit(
    *,
    train_loop: Callable[[dict], None],
    loop_config: dict[str, Any],
    train_dataset: Any,
    train: Any,
    run_name: str,
    data_fingerprint: str,
) -> Any:
    """Run ``train_loop`` on Ray Train workers; returns the ``ray.train.Result``.

    Args:
        train_loop: the per-worker loop (a module-level function).
        loop_config: passed to every worker (JSON-like); ``run_dir`` (the run's checkpoint
            directory, for :func:`restore`) is added.
        train_dataset: Ray Dataset of training examples (split per worker).
        train: :class:`lantern_batch.distill.config.TrainSettings`.
        run_name: run directory under ``train.storage_path``.
        data_fingerprint: the training data's fingerprint. Every checkpoint records it; a run
            directory whose checkpoints were written for other data is never resumed (an
            explicit ``train.run_name`` reused for new data is an error naming both).
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage, fs = run_storage(train.storage_path)
    # Absolute: the workers resolve it from their own working directories.
    existing = run_dir(train.storage_path if io.is_s3(train.storage_path) else os.path.abspath(train.storage_path),
                       run_name)
    if not train.resume:
        io.delete_dir(existing)
    elif io.exists(existing):
        check_run_data(existing, run_name, data_fingerprint)
        event(log, "train.resume_candidate", run=run_name, storage=train.storage_path)
    scaling = train.scaling
    resources = {"CPU": scaling.cpus_per_worker}
    trainer = TorchTrainer(
        train_loop_per_worker=functools.partial(loop_in_driver_cwd, train_loop, os.getcwd()),
        train_loop_config={**loop_config, "run_dir": existing, "data_fingerprint": data_fingerprint},
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=train.checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=train.max_failures),
            worker_runtime_env={"env_vars": _worker_env()},
        ),
        datasets={"train": train_dataset},
        dataset_config=DataConfig(datasets_to_split=["train"]),
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
    )
    start = time.perf_counter()
    result = trainer.fit()
    event(log, "train.done", run=run_name, seconds=round(time.perf_counter() - start, 1),
          checkpoint=getattr(result.checkpoint, "path", None))
    return result


def check_run_data(run_dir: str, run_name: str, data_fingerprint: str) -> None:
    """Refuse to resume ``run_dir`` when its checkpoints were trained on other data.

    Ray Train resumes any run of the same name; a run name given explicitly and reused for new
    data would otherwise continue the old run's optimizer and step count on the new data.
    Checkpoints written before fingerprints were recorded count as other data.
    """
    found = {fp for fp in checkpoint_fingerprints(run_dir) if fp != data_fingerprint}
    if found:
        raise InputError(
            f"train.run_name {run_name!r}: {run_dir} holds checkpoints of training data "
            f"{', '.join(sorted(str(f) for f in found))}, this run's data is {data_fingerprint}; "
            "use another run_name, or train.resume=false to start it over")


def loop_in_driver_cwd(train_loop: Callable[[dict], None], cwd: str, config: dict) -> None:
    """Run ``train_loop(config)`` from the driver's working directory.

    Ray Train starts every worker in a working directory of its own, so a relative local path in
    a config (``runs/demo/models/teacher``, as the demo configs write them) would name another
    place on the workers than on the driver. Where the driver's directory exists on the worker's
    node (one machine, or a shared file system) the loop runs from there; on other nodes paths
    must be absolute or ``s3://``.
    """
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    train_loop(config)


def _worker_env() -> dict[str, str]:
    """Environment the workers need beyond Ray's own: S3 endpoint/credentials (tests, MinIO),
    the model cache, quiet tokenizers."""
    keys = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "LANTERN_CACHE_DIR",
            "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LANTERN_LOG_LEVEL", "LANTERN_TEST_STEP_DELAY_S")
    env = {k: os.environ[k] for k in keys if os.environ.get(k)}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def on_eval_worker(fn: Callable[..., Any], scaling: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` (final evaluation + export) as a Ray task with one training worker's
    resources — a GPU on a GPU cluster — instead of in the driver, which on a cluster is a small
    head-node process."""
    import ray

    task = ray.remote(num_cpus=scaling.cpus_per_worker, num_gpus=1 if scaling.use_gpu else 0, max_retries=0)(fn)
    return ray.get(task.remote(*args))


def require_heldout(model: str, metrics: dict[str, Any], key: str, threshold: float | None) -> None:
    """Stop a distillation job (exit 3) whose exported model misses its held-out bar.

    ``metrics[key]`` is the held-out score (accuracy, macro-F1); ``metrics['confusion']``, when
    there, says what the model predicted (a collapse to one class reads at a glance). No
    held-out pair to score is a failure too: nothing shows the bar is met.

    Raises:
        QualityGateError: the score is missing or below ``threshold`` (None: no bar).
    """
    from lantern_batch.errors import QualityGateError
    from lantern_batch.schema import FIT_LABELS

    if threshold is None:
        return
    value = metrics.get(key)
    if value is None:
        raise QualityGateError(f"{model} has no held-out pairs to check min_{key} {threshold} against")
    if value < threshold:
        said = ""
        if metrics.get("confusion"):
            predicted = [sum(col) for col in zip(*metrics["confusion"], strict=True)]
            said = " (it predicted " + ", ".join(f"{lab} {n}" for lab, n in zip(FIT_LABELS, predicted, strict=True)) + ")"
        raise QualityGateError(f"{model} held-out {key} {value:.3f} is below min_{key} {threshold}{said}")


def eval_device(scaling: Any) -> Any:
    """Device for evaluation inside :func:`on_eval_worker`: CUDA when present, else the CPU with
    ``torch_threads`` (default: every core — evaluation runs alone after training)."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(scaling.torch_threads or os.cpu_count() or 1)
    return torch.device("cpu")


def checkpoint_local_dir(checkpoint: Any) -> Iterator[str]:
    """Context manager yielding a local directory with the checkpoint's files."""
    return checkpoint.as_directory()


def read_trainer_state(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, STATE_FILE)
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# Worker side


@dataclass
class WorkerContext:
    """What a training loop needs to know about its worker."""

    rank: int
    world_size: int
    device: Any
    use_gpu: bool


def worker_setup(train: Any) -> WorkerContext:
    """Seeds, thread count and device of this worker."""
    import random

    import numpy as np
    import ray.train
    import torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    local_world = ctx.get_local_world_size()
    threads = train.scaling.torch_threads or max(1, (os.cpu_count() or 2) // max(1, local_world))
    torch.set_num_threads(threads)
    seed = int(train.seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if train.scaling.use_gpu:
        import ray.train.torch as rtt

        device = rtt.get_device()
    else:
        device = torch.device("cpu")
    event(log, "train.worker", rank=rank, world=world, threads=threads, device=str(device))
    return WorkerContext(rank, world, device, bool(train.scaling.use_gpu))


def restore(run_dir: str | None = None, data_fingerprint: str | None = None) -> tuple[dict[str, Any] | None, Any]:
    """The checkpoint to resume from and its trainer state (``(None, None)`` on a fresh run).

    Ray Train's latest registered checkpoint, unless ``run_dir`` holds a newer complete one
    that a killed run uploaded but Ray never registered (see the module docstring); the scan
    adopts only checkpoints written for ``data_fingerprint``. With several workers rank 0
    chooses and the others follow, so all load the same checkpoint.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = read_trainer_state(d)
    if not run_dir:
        return ({**state, "restored_via": "ray"} if state else None), checkpoint
    ctx = ray.train.get_context()
    choice: list[Any] = [None]
    if ctx.get_world_rank() == 0:
        found = latest_complete_checkpoint(run_dir, data_fingerprint)
        if found is not None and found[1] > (int(state["step"]) if state else -1):
            choice[0] = found[0]
    if ctx.get_world_size() > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.broadcast_object_list(choice, src=0)
    if choice[0] is None:
        return ({**state, "restored_via": "ray"} if state else None), checkpoint
    fs, path = io.filesystem(choice[0])
    unregistered = ray.train.Checkpoint(path=path, filesystem=fs)
    with unregistered.as_directory() as d:
        new_state = read_trainer_state(d)
    event(log, "train.restore_unregistered", checkpoint=io.basename(choice[0]), step=new_state["step"],
          registered_step=state["step"] if state else None, rank=ctx.get_world_rank())
    return {**new_state, "restored_via": "storage_scan"}, unregistered


def write_manifest(directory: str, rank: int, file_ranks: list[int], step: int,
                   data_fingerprint: str | None = None) -> None:
    """Record this rank's checkpoint files as ``files.rank<rank>.json``: relative path → size
    (``files``) and → sha256 (``sha256``), the step and the training data's fingerprint; rank 0's
    also names the ranks whose manifests a complete checkpoint has."""
    files: dict[str, int] = {}
    digests: dict[str, str] = {}
    for root, _, names in os.walk(directory):
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, directory).replace(os.sep, "/")
            if not rel.startswith(MANIFEST_PREFIX):
                files[rel] = os.path.getsize(full)
                digests[rel] = _sha256_file(full)
    manifest: dict[str, Any] = {"rank": rank, "step": step, "files": files, "sha256": digests,
                                "data_fingerprint": data_fingerprint}
    if rank == 0:
        manifest["file_ranks"] = sorted(file_ranks)
    with open(os.path.join(directory, f"{MANIFEST_PREFIX}{rank}.json"), "w") as f:
        json.dump(manifest, f)


def _sha256_file(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(fs: Any, root: str, rank: int) -> dict[str, Any] | None:
    try:
        with fs.open_input_stream(f"{root}/{MANIFEST_PREFIX}{rank}.json") as f:
            return json.loads(f.read().decode())
    except (OSError, ValueError):
        return None


def checkpoint_step_if_complete(checkpoint_dir: str, data_fingerprint: str | None = None) -> int | None:
    """The step of the checkpoint in ``checkpoint_dir`` (local or ``s3://``) when every file its
    manifests list is present with the recorded size (and, given ``data_fingerprint``, it was
    written for that training data); None when incomplete, unreadable or of other data."""
    import pyarrow.fs as pafs

    fs, root = io.filesystem(checkpoint_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError:
        return None
    sizes = {i.path[len(root):].lstrip("/"): i.size for i in infos if i.type == pafs.FileType.File}

    def manifest(rank: int) -> dict[str, Any] | None:
        return _read_manifest(fs, root, rank) if f"{MANIFEST_PREFIX}{rank}.json" in sizes else None

    first = manifest(0)
    if first is None:
        return None
    if data_fingerprint is not None and first.get("data_fingerprint") != data_fingerprint:
        return None
    for rank in first.get("file_ranks", [0]):
        m = first if rank == 0 else manifest(rank)
        if m is None or m.get("step") != first["step"]:
            return None
        if any(sizes.get(rel) != size for rel, size in m["files"].items()):
            return None
    return int(first["step"])


def _checkpoint_dirs(run_dir: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, root = io.filesystem(run_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=False, allow_not_found=True))
    except OSError:
        return []
    return [io.join(run_dir, i.base_name) for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")]


def latest_complete_checkpoint(run_dir: str, data_fingerprint: str | None = None) -> tuple[str, int] | None:
    """``(path, step)`` of the complete checkpoint with the highest step under ``run_dir``
    (given ``data_fingerprint``, only among those written for that training data)."""
    best: tuple[str, int] | None = None
    for path in _checkpoint_dirs(run_dir):
        step = checkpoint_step_if_complete(path, data_fingerprint)
        if step is not None and (best is None or step > best[1]):
            best = (path, step)
    return best


def checkpoint_fingerprints(run_dir: str) -> set[str | None]:
    """The training-data fingerprints the complete checkpoints under ``run_dir`` record (None
    for a checkpoint written before fingerprints were recorded)."""
    found: set[str | None] = set()
    for path in _checkpoint_dirs(run_dir):
        if checkpoint_step_if_complete(path) is None:
            continue
        fs, root = io.filesystem(path)
        first = _read_manifest(fs, root, 0) or {}
        found.add(first.get("data_fingerprint"))
    return found


def verify_checkpoint(directory: str) -> None:
    """Check every file of a local checkpoint directory against its manifests' sha256 before
    anything in it is unpickled; a file that differs, or is not listed, is an error."""
    manifests = [n for n in os.listdir(directory) if n.startswith(MANIFEST_PREFIX)]
    if not manifests:
        raise InputError(f"checkpoint {directory} has no {MANIFEST_PREFIX}<rank>.json manifest: "
                         "refusing to load files it cannot verify")
    listed: dict[str, str] = {}
    for name in manifests:
        with open(os.path.join(directory, name)) as f:
            listed.update(json.load(f).get("sha256") or {})
    for root, _, names in os.walk(directory):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
            if rel.startswith(MANIFEST_PREFIX):
                continue
            want = listed.get(rel)
            if want is None or _sha256_file(os.path.join(root, name)) != want:
                raise InputError(f"checkpoint {directory}: {rel} does not match the sha256 its manifest "
                                 "recorded: refusing to load it")


def linear_warmup_decay(optimizer: Any, total_steps: int, warmup_ratio: float) -> Any:
    """LambdaLR: linear warm-up over ``warmup_ratio`` of the steps (at least one when the ratio
    is positive), the first step already at ``lr / warmup``, then linear decay to 0.

    Not transformers' ``get_linear_schedule_with_warmup``: that one runs the first step at lr 0,
    and on the demo's 60-step teacher SFT that alone moved T2's held-out label agreement from
    0.76 to 0.27 (every pair Medium; training here is deterministic, so the two runs differ only
    in the schedule; bench/RESULTS.md, "demo").
    """
    import torch

    warmup = max(1, int(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_state_dict(model: Any, only_trainable: bool) -> dict[str, Any]:
    """The model's state dict (only parameters that train, for LoRA), on CPU."""
    if not only_trainable:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


@dataclass
class Engine:
    """The model as trained: a DDP-wrapped module or a DeepSpeed engine, and how to step it."""

    module: Any
    """Forward calls go through this (DDP wrapper / DeepSpeed engine / plain module)."""
    model: Any
    """The unwrapped model (for saving)."""
    optimizer: Any
    scheduler: Any
    deepspeed: bool = False
    only_trainable: bool = False
    clip: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def backward(self, loss: Any, grad_accum: int) -> None:
        if self.deepspeed:
            self.module.backward(loss)
        else:
            (loss / grad_accum).backward()

    def step(self) -> None:
        import torch

        if self.deepspeed:
            self.module.step()
            return
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def micro_step(self) -> None:
        """DeepSpeed counts micro-batches itself (``engine.step`` after each backward)."""
        if self.deepspeed:
            self.module.step()

    def lr(self) -> float:
        if self.deepspeed:
            return float(self.module.get_lr()[0])
        return float(self.scheduler.get_last_lr()[0])

    def save(self, directory: str, rank: int) -> None:
        """Write this worker's part of a checkpoint into ``directory``."""
        import torch

        if self.deepspeed:
            self.module.save_checkpoint(os.path.join(directory, DS_DIR), tag="zero")
            if self.module.zero_optimization_stage() == 3:
                # Gathering ZeRO-3 shards is a collective: every rank calls it, rank 0 gets it.
                state = self.module._zero3_consolidated_16bit_state_dict()
                if rank == 0:
                    torch.save(_filter_trainable(state, self.model, self.only_trainable), os.path.join(directory, MODEL_FILE))
                return
        if rank == 0:
            torch.save(trainable_state_dict(self.model, self.only_trainable), os.path.join(directory, MODEL_FILE))
            if not self.deepspeed:
                torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                           os.path.join(directory, OPTIM_FILE))

    def load(self, directory: str) -> None:
        """Restore model and optimizer state from a checkpoint directory."""
        import torch

        # DeepSpeed's own loader unpickles its files: everything is checked against the run's
        # manifest first. Our files hold tensors and plain containers only (weights_only).
        verify_checkpoint(directory)
        if self.deepspeed:
            self.module.load_checkpoint(os.path.join(directory, DS_DIR), tag="zero")
            return
        state = torch.load(os.path.join(directory, MODEL_FILE), map_location="cpu", weights_only=True)
        self.model.load_state_dict(state, strict=not self.only_trainable)
        opt = torch.load(os.path.join(directory, OPTIM_FILE), map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])


def _filter_trainable(state: dict[str, Any], model: Any, only_trainable: bool) -> dict[str, Any]:
    if not only_trainable:
        return {k: v.detach().cpu() for k, v in state.items()}
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in state.items() if k in names}


def build_engine(
    model: Any,
    train: Any,
    total_steps: int,
    ctx: WorkerContext,
    deepspeed_settings: Any | None = None,
    only_trainable: bool = False,
) -> Engine:
    """Wrap ``model`` for data-parallel training: DDP (``prepare_model``) or DeepSpeed ZeRO.

    DeepSpeed on CPU uses the gloo process group Ray Train already created (its CPU
    accelerator has no NCCL); the optimizer is torch's AdamW (DeepSpeed's fused Adam needs
    CUDA), accepted by ZeRO through ``zero_allow_untested_optimizer``.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if deepspeed_settings is not None and deepspeed_settings.enabled:
        import deepspeed

        model.to(ctx.device)
        optimizer = torch.optim.AdamW(groups, lr=train.lr)
        scheduler = linear_warmup_decay(optimizer, total_steps, train.warmup_ratio)
        config = deepspeed_config(train, deepspeed_settings, ctx)
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config,
            dist_init_required=False)
        return Engine(engine, model, optimizer, scheduler, deepspeed=True, only_trainable=only_trainable,
                      clip=train.max_grad_norm)
    import ray.train.torch

    wrapped = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})
    optimizer = torch.optim.AdamW(groups, lr=train.lr)
    scheduler = linear_warmup_decay(optimizer, total_steps, train.warmup_ratio)
    return Engine(wrapped, model, optimizer, scheduler, only_trainable=only_trainable, clip=train.max_grad_norm)


def deepspeed_config(train: Any, ds: Any, ctx: WorkerContext) -> dict[str, Any]:
    """The DeepSpeed config generated from the job config, with ``deepspeed.config`` merged over it.

    bf16 mixed precision is left to autocast in the loop on CPU (DeepSpeed's bf16 optimizer
    wrapper targets GPUs); on GPU DeepSpeed's own bf16 mode is used.
    """
    zero: dict[str, Any] = {"stage": int(ds.zero_stage)}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if int(ds.zero_stage) == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(train.batch_size),
        "gradient_accumulation_steps": int(train.grad_accum),
        "train_batch_size": int(train.batch_size) * int(train.grad_accum) * ctx.world_size,
        "gradient_clipping": float(train.max_grad_norm),
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bool(train.bf16 and ctx.use_gpu)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(config, dict(ds.config or {}))


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class StepLoop:
    """Micro-batches → optimizer steps, with progress, periodic checkpoints and resume.

    ``for batch in loop.batches(shard): ...; loop.after_backward(loss_parts)``: the loop yields
    micro-batches until ``total_steps`` optimizer steps are done, epoch after epoch, skipping the
    micro-batches a resumed run already consumed in its current epoch.
    """

    def __init__(self, *, engine: Engine, train: Any, plan: dict[str, int], ctx: WorkerContext,
                 state: dict[str, Any] | None, what: str, rows_per_example: int = 1,
                 extra_state: dict[str, Any] | None = None, data_fingerprint: str | None = None):
        self.engine, self.train, self.plan, self.ctx, self.what = engine, train, plan, ctx, what
        self.data_fingerprint = data_fingerprint
        self.step = int(state["step"]) if state else 0
        self.epoch = int(state["epoch"]) if state else 0
        self.micro_in_epoch = int(state["micro_in_epoch"]) if state else 0
        self.samples = int(state["samples"]) if state else 0
        self.resumed_from = self.step if state else None
        # "ray" (the controller's registered checkpoint) or "storage_scan" (see restore()).
        self.restored_via = state.get("restored_via") if state else None
        self.loss_first = state.get("loss_first") if state else None
        self.loss_last = state.get("loss_last") if state else None
        self.extra_state = dict(extra_state or {})
        self.restored: Any = None  # the checkpoint the run resumed from (see resumed())
        self._micro = 0
        self._start = time.perf_counter()
        self._samples_at_start = self.samples
        self._warm: tuple[float, int] | None = None  # (time, samples) after the first step
        self._reported = False
        self._loss_sum: dict[str, float] = {}
        self._loss_n = 0
        if state:
            event(log, f"{what}.resumed", rank=ctx.rank, step=self.step, epoch=self.epoch,
                  micro_in_epoch=self.micro_in_epoch)

    @classmethod
    def resumed(cls, *, engine: Engine, train: Any, plan: dict[str, int], ctx: WorkerContext,
                config: dict[str, Any], what: str) -> StepLoop:
        """The loop of a worker's training function: the run's newest complete checkpoint (if
        any, see :func:`restore`) loaded into ``engine``, the module in train mode."""
        state, checkpoint = restore(config.get("run_dir"), config.get("data_fingerprint"))
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                engine.load(d)
        engine.module.train()
        loop = cls(engine=engine, train=train, plan=plan, ctx=ctx, state=state, what=what,
                   data_fingerprint=config.get("data_fingerprint"))
        loop.restored = checkpoint
        return loop

    @property
    def done(self) -> bool:
        return self.step >= self.plan["total_steps"]

    def shard_batches(self, shard: Any, batch_format: str, min_shuffle_buffer: int) -> Iterator[Any]:
        """:meth:`batches` of ``train.batch_size`` rows, locally shuffled when ``train.shuffle``
        (a buffer of at least ``min_shuffle_buffer`` rows, seeded by the epoch it starts in)."""
        iter_kwargs: dict[str, Any] = {"batch_format": batch_format, "prefetch_batches": 1}
        if self.train.shuffle:
            iter_kwargs.update(local_shuffle_buffer_size=max(min_shuffle_buffer, 8 * self.train.batch_size),
                               local_shuffle_seed=self.train.seed + self.epoch)
        return self.batches(shard, self.train.batch_size, **iter_kwargs)

    def batches(self, shard: Any, batch_size: int, **iter_kwargs: Any) -> Iterator[Any]:
        while not self.done:
            skip = self.micro_in_epoch
            seen = 0
            for batch in shard.iter_batches(batch_size=batch_size, **iter_kwargs):
                seen += 1
                if seen <= skip:
                    continue  # consumed before the resume
                self.micro_in_epoch = seen
                yield batch
                if self.done:
                    break
            if self.done:
                break
            self.epoch += 1
            self.micro_in_epoch = 0

    def after_backward(self, batch_rows: int, parts: dict[str, float]) -> None:
        """Account one micro-batch; step the optimizer every ``grad_accum`` micro-batches."""

        self._micro += 1
        self.samples += batch_rows * self.ctx.world_size
        for k, v in parts.items():
            self._loss_sum[k] = self._loss_sum.get(k, 0.0) + float(v)
        self._loss_n += 1
        if self.engine.deepspeed:
            self.engine.micro_step()
            if self._micro % self.train.grad_accum:
                return
        else:
            if self._micro % self.train.grad_accum:
                return
            self.engine.step()
        self.step += 1
        if self._warm is None:
            self._warm = (time.perf_counter(), self.samples)
        delay = float(os.environ.get("LANTERN_TEST_STEP_DELAY_S", "0") or 0)
        if delay:
            time.sleep(delay)  # tests only: widen the window in which a kill lands mid-run
        losses = {k: v / max(1, self._loss_n) for k, v in self._loss_sum.items()}
        if "total" in losses:
            self.loss_last = losses["total"]
            if self.loss_first is None:
                self.loss_first = losses["total"]
        metrics = {"step": self.step, "epoch": self.epoch, "samples": self.samples, "lr": self.engine.lr(),
                   **{f"loss_{k}": v for k, v in losses.items()}}
        if self.step % self.train.log_every_steps == 0 or self.done or self.step == 1:
            self._progress(losses)
            self._loss_sum, self._loss_n = {}, 0
        if self.done or self.step % self.train.checkpoint_every_steps == 0:
            self.checkpoint(metrics)

    def _progress(self, losses: dict[str, float]) -> None:
        if self.ctx.rank != 0:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = (self.samples - self._samples_at_start) / elapsed
        remaining = (self.plan["total_steps"] - self.step) * self.train.batch_size * self.train.grad_accum * self.ctx.world_size
        event(log, f"{self.what}.progress", step=self.step, total=self.plan["total_steps"],
              pct=round(100 * self.step / self.plan["total_steps"], 1), epoch=self.epoch,
              samples_per_s=round(rate, 2), eta_s=round(remaining / rate, 1) if rate else None,
              lr=self.engine.lr(), **{f"loss_{k}": round(v, 4) for k, v in losses.items()})

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "micro_in_epoch": self.micro_in_epoch,
                "samples": self.samples, "total_steps": self.plan["total_steps"],
                "resumed_from": self.resumed_from, "restored_via": self.restored_via, "loss_first": self.loss_first,
                "loss_last": self.loss_last, "samples_per_s": self.steady_throughput(),
                **self.extra_state}

    def finish(self) -> None:
        """End of the loop. A run restored from a checkpoint of an already finished run reports
        that checkpoint again, so the run's result always carries its final weights."""
        import ray.train

        if self._reported or self.restored is None:
            return
        has_files = self.engine.deepspeed or self.ctx.rank == 0
        with self.restored.as_directory() as d:
            checkpoint = ray.train.Checkpoint.from_directory(d) if has_files else None
            ray.train.report({"step": self.step, "epoch": self.epoch}, checkpoint=checkpoint)
        if self.ctx.rank == 0:
            event(log, f"{self.what}.already_done", step=self.step)

    def checkpoint(self, metrics: dict[str, Any]) -> None:
        """Every rank writes its part and reports; Ray Train merges them into one checkpoint."""
        import ray.train

        self._reported = True
        tmp = tempfile.mkdtemp(prefix=f"ckpt-{self.what}-")
        try:
            self.engine.save(tmp, self.ctx.rank)
            if self.ctx.rank == 0:  # one copy: ranks' differing throughputs would collide
                with open(os.path.join(tmp, STATE_FILE), "w") as f:
                    json.dump(self.state(), f)
            has_files = self.engine.deepspeed or self.ctx.rank == 0
            if has_files:
                file_ranks = list(range(self.ctx.world_size)) if self.engine.deepspeed else [0]
                write_manifest(tmp, self.ctx.rank, file_ranks, self.step, self.data_fingerprint)
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if has_files else None
            ray.train.report(metrics, checkpoint=checkpoint)
            if self.ctx.rank == 0:
                event(log, f"{self.what}.checkpoint", step=self.step, epoch=self.epoch)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def steady_throughput(self) -> float | None:
        """Samples per second (all workers) after the first optimizer step (warm-up excluded)."""
        if self._warm is None or self.samples <= self._warm[1]:
            return None
        return round((self.samples - self._warm[1]) / max(time.perf_counter() - self._warm[0], 1e-9), 3)

    def throughput(self) -> float:
        """Samples per second since this (possibly resumed) run started."""
        return (self.samples - self._samples_at_start) / max(time.perf_counter() - self._start, 1e-9)
