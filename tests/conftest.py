"""Shared pytest setup. Fixtures live in tests/fixtures/<topic>.py, one module per topic."""

import os

# Tests never attach to a stray cluster and never phone home.
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.ray",
    "tests.fixtures.s3",
    "tests.fixtures.world",
    "tests.fixtures.models",
    "tests.fixtures.faults",
]
