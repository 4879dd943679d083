"""Starting or joining Ray, in one visible place.

Library code never calls ``ray.init``; jobs call :func:`init_ray` once with their
:class:`~lantern_batch.config.RayConfig`. Under ``ray job submit`` (``RAY_ADDRESS`` set) the job
joins that cluster; otherwise a local Ray is started with the config's logical CPUs.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import resource_tracker

from lantern_batch.config import RayConfig
from lantern_batch.logs import event, get_logger

log = get_logger(__name__)

# Silence Ray's usage-stats prompt/network call and keep local runs self-contained.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


# S3 endpoint and credential variables handed to Ray workers when the driver has them set (an
# S3-protocol server such as moto or MinIO, or explicit keys); unset ones are never passed, so a
# cluster's own credential chain (instance profiles) stays in charge.
S3_ENV_VARS = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def engine_kwargs(kwargs: dict) -> dict:
    """vLLM engine kwargs with the project's ``dtype: auto`` resolved for this process's hardware.

    vLLM's own ``auto`` is the model's dtype (bfloat16 for SmolLM2), which on a CPU without
    native bf16 (AVX-512 BF16 / AMX) runs through emulation: SmolLM2-135M generated 9.9 output
    tokens/s in bfloat16 against 38.1 in float32 on such a 2-core host. So ``auto`` here is
    vLLM's ``auto`` on a GPU, ``bfloat16`` on a CPU that has native bf16, ``float32`` on one that
    does not. Call it where the engine starts (inside the actor: the worker's hardware counts).
    An explicit dtype is passed through.
    """
    if kwargs.get("dtype", "auto") != "auto":
        return dict(kwargs)
    import torch

    dtype = resolve_dtype("auto", gpu=torch.cuda.is_available())
    if dtype != "auto":
        event(log, "runtime.engine_dtype", dtype=dtype)
    return {**kwargs, "dtype": dtype}


def resolve_dtype(dtype: str | None = "auto", *, gpu: bool) -> str:
    """The dtype a configured ``dtype`` (None: unset, which is ``auto``) runs in, for a model on a
    GPU (``gpu``) or on this host's CPU: what :func:`engine_kwargs` gives vLLM, and the
    precision the precompute classifier's ``auto`` computes in (bf16 autocast exactly where
    :func:`~lantern_batch.classifier.bf16_supported`).

    An explicit dtype is itself; ``auto`` on a GPU stays ``auto`` (vLLM's: the model's own
    dtype; the classifier's: bf16 where the GPU has it); ``auto`` on a CPU is ``bfloat16`` where
    this host's CPU has native bf16, else ``float32``. Precompute fingerprints this, not the
    configured word, so a move from a bf16 host to a float32 one reuses nothing the other
    precision wrote.
    """
    if dtype not in (None, "auto"):
        return str(dtype)
    if gpu:
        return "auto"
    from lantern_batch.classifier import bf16_supported

    return "bfloat16" if bf16_supported("cpu") else "float32"


def retry_sampling(sampling_params: dict, retry_overrides: dict, k: int) -> dict:
    """Sampling parameters of retry ``k`` (0-based) of a rejected generation: ``retry_overrides``
    over ``sampling_params``, the seed advanced by ``k`` so each try samples another text (the
    first pass is usually greedy, and greedy decoding would repeat the rejected output). Used by
    the teacher stage (``vllm.retries``) and the precompute explainer (``regenerations``)."""
    params = {**sampling_params, **retry_overrides}
    if params.get("seed") is not None:
        params["seed"] = int(params["seed"]) + k
    return params


def shutdown_engine(llm: object | None) -> None:
    """Stop a ``vllm.LLM``'s engine process now, quietly (idempotent; None is a no-op)."""
    if sys.meta_path is None:  # interpreter teardown: the engine's processes exit with their parent
        return
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is None or not hasattr(core, "shutdown"):
        return
    # Before the engine goes: its shutdown kills this process's resource tracker and unlinks
    # shared memory, and a tracker relaunched for that prints a KeyError traceback.
    quiet_dead_resource_tracker()
    try:
        core.shutdown()
    except Exception as exc:  # noqa: BLE001 - shutting down must not turn a finished run into a failure
        log.debug("vllm.shutdown_failed error=%s", type(exc).__name__)


def quiet_dead_resource_tracker() -> None:
    """Skip unregistering shared memory from this process's resource tracker once it is dead.

    vLLM's engine shutdown kills the actor's ``multiprocessing`` resource tracker along with the
    engine's processes. The next ``SharedMemory.unlink`` (vLLM's message queues, as the actor
    exits) then relaunches a tracker that never saw the segment, and that tracker prints a
    ``KeyError: '/psm_…'`` traceback into the job's log after a successful stage. A dead
    tracker has nothing to unregister, so the call is skipped; a live one is called as before.
    Idempotent.
    """
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    unregister = resource_tracker.unregister
    if tracker is None or not hasattr(tracker, "_check_alive") or getattr(unregister, "quiet_when_dead", False):
        return

    def quiet_unregister(name: str, rtype: str) -> None:
        if getattr(tracker, "_fd", None) is not None and not tracker._check_alive():
            return
        unregister(name, rtype)

    quiet_unregister.quiet_when_dead = True  # type: ignore[attr-defined]
    resource_tracker.unregister = quiet_unregister


def s3_runtime_env() -> dict[str, object]:
    """``runtime_env`` carrying the set S3 variables to workers (empty when none is set)."""
    env_vars = {k: os.environ[k] for k in S3_ENV_VARS if os.environ.get(k)}
    return {"env_vars": env_vars} if env_vars else {}


def init_ray(cfg: RayConfig) -> None:
    """Connect to the configured cluster, the submitting cluster, or start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    runtime_env = s3_runtime_env()
    extra = {"runtime_env": runtime_env} if runtime_env else {}
    # Names only: the values are credentials.
    passed = ",".join(sorted(runtime_env.get("env_vars", {}))) or "none"  # type: ignore[arg-type]
    if address:
        ray.init(address=address, log_to_driver=cfg.log_to_driver, **extra)
        event(log, "ray.joined", address=address, cpus=ray.cluster_resources().get("CPU", 0),
              s3_env=passed)
    else:
        # Only a local Ray lacks the dashboard's State API that the known noise is about.
        extra["runtime_env"] = {**runtime_env, "worker_process_setup_hook": "lantern_batch.logs.quiet_known_ray_noise"}
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            object_store_memory=cfg.object_store_memory,
            include_dashboard=cfg.include_dashboard,
            log_to_driver=cfg.log_to_driver,
            **extra,
        )
        event(log, "ray.local_started", cpus=cfg.num_cpus, s3_env=passed)
    configure_data_context()


def configure_data_context() -> None:
    """Ray Data settings shared by every pipeline: progress bars on, row order not preserved
    (rows are keyed by (member_id, job_id) and order never matters)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = False
    ctx.enable_progress_bars = True
