"""Hardware-dependent choices: the engine dtype ``auto`` and bf16 autocast follow native bf16."""

import torch

from lantern_batch.classifier import autocast_context, bf16_supported
from lantern_batch.runtime import engine_kwargs


def test_engine_dtype_auto_is_bf16_only_where_the_cpu_has_it():
    want = "bfloat16" if bf16_supported("cpu") else "float32"
    assert engine_kwargs({"dtype": "auto", "max_model_len": 512}) == {"dtype": want, "max_model_len": 512}
    assert engine_kwargs({"max_model_len": 512})["dtype"] == want  # unset means auto
    # An explicit dtype is the user's choice.
    assert engine_kwargs({"dtype": "bfloat16"}) == {"dtype": "bfloat16"}
    assert engine_kwargs({"dtype": "float32"}) == {"dtype": "float32"}


def test_autocast_never_emulates_bf16_on_a_cpu_without_it():
    a = torch.randn(8, 8)
    with autocast_context("cpu", True):
        on = (a @ a).dtype
    with autocast_context("cpu", False):
        off = (a @ a).dtype
    assert off == torch.float32
    assert on == (torch.bfloat16 if bf16_supported("cpu") else torch.float32)
