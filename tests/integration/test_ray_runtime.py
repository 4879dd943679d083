"""The local Ray that jobs start: its workers drop the known noise of Ray's own internals (and
only that), so a demo's output is its progress and its summary."""

from __future__ import annotations

from lantern_batch.logs import KNOWN_RAY_NOISE


def test_local_ray_workers_drop_known_noise_and_keep_every_other_message(ray_local):
    ray = ray_local
    (name, (start,)), = KNOWN_RAY_NOISE.items()

    @ray.remote(num_cpus=0)
    def emit(logger_name: str, noise: str) -> list[str]:
        import logging

        seen: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record.getMessage())

        logger = logging.getLogger(logger_name)
        logger.addHandler(Keep())
        logger.warning(noise + ". State API may be temporarily unavailable. Continuing to monitor.")
        logger.warning("Placement group released.")
        return seen

    assert ray.get(emit.remote(name, start)) == ["Placement group released."]
