"""Decoder pieces on a tiny random Llama: layer pruning keeps the teacher's weights, output-only
labels, top-k alignment, DecoderForKD's selected logits equal the full model's, LoRA merges."""

import pytest
import torch

from lantern_batch.distill.decoder import (
    IGNORE_INDEX,
    DecoderForKD,
    apply_lora,
    build_lm_example,
    collate_lm,
    count_parameters,
    decoder_layers,
    keep_indices,
    layer_pruned,
    merge_lora,
    online_topk,
    teacher_forced_metrics,
    teacher_topk,
)


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_keep_indices():
    assert keep_indices(30, 3, None) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 29]
    assert keep_indices(6, 2, None) == [0, 2, 5]
    assert keep_indices(6, None, None) == list(range(6)) == keep_indices(6, 1, None)
    assert keep_indices(6, 3, [5, 0, 0]) == [0, 5]
    with pytest.raises(ValueError):
        keep_indices(6, None, [6])


def test_layer_pruned_student_is_initialised_from_the_teacher(llama):
    import copy

    teacher_layers = decoder_layers(llama)
    student = layer_pruned(copy.deepcopy(llama), [0, 2, 5])
    layers = decoder_layers(student)
    assert len(layers) == 3 and student.config.num_hidden_layers == 3
    for new, old in zip(layers, [0, 2, 5], strict=True):
        assert torch.equal(new.self_attn.q_proj.weight, teacher_layers[old].self_attn.q_proj.weight)
        assert new.self_attn.layer_idx == [0, 2, 5].index(old)
    assert count_parameters(student) < count_parameters(llama)
    out = student.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)  # KV cache works
    assert out.shape == (1, 7)


def test_lm_example_truncation_and_output_only_labels():
    ex = build_lm_example(list(range(100, 140)), [1, 2, 3], eos=9, max_length=20, max_target_tokens=8,
                          topk_ids=[[1], [2], [3]], topk_logprobs=[[-0.1], [-0.2], [-0.3]], keep_prompt_head=4)
    assert ex["target_ids"] == [1, 2, 3, 9] and len(ex["prompt_ids"]) == 16
    assert ex["prompt_ids"][:4] == [100, 101, 102, 103] and ex["prompt_ids"][-1] == 139
    assert ex["truncated_prompt"] and not ex["truncated_target"]
    cut = build_lm_example([5, 6], [1, 2, 3, 4], eos=9, max_length=50, max_target_tokens=2,
                           topk_ids=[[1], [2], [3], [4]], topk_logprobs=[[0.0]] * 4)
    assert cut["target_ids"] == [1, 2] and cut["truncated_target"] and len(cut["topk_ids"]) == 2

    b = collate_lm({"prompt_ids": [[5, 6, 7], [5]], "target_ids": [[1, 2], [3, 4, 9]],
                    "topk_ids": [[[1, 8], [2, 8]], None], "topk_logprobs": [[[-0.1, -2.0], [-0.2, -2.0]], None]}, pad=0)
    assert b["labels"].tolist() == [[IGNORE_INDEX] * 3 + [1, 2], [IGNORE_INDEX, 3, 4, 9, IGNORE_INDEX]]
    assert b["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 1, 0]]
    assert b["kd_mask"].tolist() == [[False, False, False, True, True], [False] * 5]
    assert b["topk_ids"][0, 3].tolist() == [1, 8] and b["topk_ids"][1, 1].tolist() == [-1, -1]


def test_decoder_for_kd_logits_match_the_full_model(llama):
    b = collate_lm({"prompt_ids": [[5, 6, 7, 8], [9, 10]], "target_ids": [[1, 2], [3, 4, 11]]}, pad=0)
    logits, sel = DecoderForKD(llama)(b["input_ids"], b["attention_mask"], b["labels"])
    assert logits.shape == (5, 97) and sel.sum() == 5
    with torch.no_grad():
        full = llama(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits  # [b, s, v]
    prev = torch.zeros_like(sel)
    prev[:, :-1] = sel[:, 1:]
    torch.testing.assert_close(logits.detach(), full[prev], atol=1e-4, rtol=1e-4)

    ids, lps = teacher_topk(llama, [[5, 6, 7, 8], [9, 10]], [[1, 2], [3, 4, 11]], k=3)
    assert [len(x) for x in ids] == [2, 3] and len(ids[0][0]) == 3
    assert ids[0][0] == torch.log_softmax(full[0, 3], -1).topk(3).indices.tolist()
    online = online_topk(llama, b, k=3)
    assert online["kd_mask"].tolist() == sel.tolist()
    assert online["topk_ids"][0, 5].tolist() == ids[0][1]


def test_lora_trains_adapters_only_and_merges_into_plain_weights(llama):
    import copy

    from lantern_batch.distill.config import LoraSettings

    model = apply_lora(copy.deepcopy(llama), LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj", "nope"])).eval()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = model(x).logits
        merged = merge_lora(model)
        after = merged(x).logits
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="LoRA target"):
        apply_lora(copy.deepcopy(llama), LoraSettings(target_modules=["nothing"]))


def test_teacher_forced_metrics_match_the_full_models_cross_entropy(llama):
    prompts = [[5, 6, 7, 8], [9, 10]]
    targets = [[11, 12, 13], [14, 15, 16, 17]]
    got = teacher_forced_metrics(llama, prompts, targets, pad=0, batch_size=1, bf16=False)
    nll, hits, n = 0.0, 0, 0
    for p, t in zip(prompts, targets, strict=True):
        with torch.no_grad():
            logits = llama(torch.tensor([p + t])).logits[0].float()  # [seq, vocab]
        pred = logits[len(p) - 1: len(p) + len(t) - 1]  # positions predicting the targets
        nll += float(torch.nn.functional.cross_entropy(pred, torch.tensor(t), reduction="sum"))
        hits += int((pred.argmax(-1) == torch.tensor(t)).sum())
        n += len(t)
    assert got["tokens"] == n == 7
    assert got["nll"] == pytest.approx(nll / n, rel=1e-4)
    assert got["token_accuracy"] == hits / n
    # Batched with padding: the same numbers.
    batched = teacher_forced_metrics(llama, prompts, targets, pad=0, batch_size=2, bf16=False)
    assert batched["nll"] == pytest.approx(got["nll"], rel=1e-4)


def test_label_token_rows_pick_each_sequences_fit_label_token():
    from transformers import AutoTokenizer

    from lantern_batch.distill.teacher_sft import (
        label_token_ids,
        label_token_rows,
        structured_output,
    )
    from lantern_batch.models import resolve

    tok = AutoTokenizer.from_pretrained(str(resolve("bundled:smollm2")))
    prefix, firsts = label_token_ids(tok)
    labels_in = ["Medium", "High", "Low"]
    targets = [tok(structured_output(lab, None, "Because."), add_special_tokens=False)["input_ids"]
               for lab in labels_in]
    prompts = [[5, 6, 7], [8] * 11, [9, 10]]  # different prompt lengths: rows are offset
    rows = {"prompt_ids": prompts + [[4]], "target_ids": targets + [prefix[:1]]}  # the last: too short
    b = collate_lm(rows, 0)
    flat = b["labels"][b["labels"] != IGNORE_INDEX]  # what DecoderForKD's logits rows predict
    picked = label_token_rows(b["labels"], len(prefix))
    assert picked.tolist() == [len(prefix), len(targets[0]) + len(prefix),
                               len(targets[0]) + len(targets[1]) + len(prefix)]
    assert flat[picked].tolist() == [firsts[["High", "Medium", "Low"].index(x)] for x in labels_in]
