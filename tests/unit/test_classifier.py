"""FitClassifier: any HF encoder (BERT, ModernBERT, DeBERTa-v2) + pooling + 3-way head;
save/load round trip; predict_proba's batching and padding do not change the answer."""

import json

import numpy as np
import pytest
import torch

from lantern_batch.classifier import (
    HEAD_FILE,
    META_FILE,
    FitClassifier,
    length_sorted_batches,
    load_classifier,
    predict_proba,
)
from lantern_batch.schema import FIT_LABELS

CORPUS = [
    "senior python engineer with spark and sql in berlin",
    "junior nurse looking for night shifts in lyon",
    "staff data scientist machine learning forecasting",
    "warehouse associate forklift licence remote not possible",
] * 5
TEXTS = ["senior python engineer", "nurse", "data scientist with spark and sql and python in berlin"]


@pytest.fixture(scope="module")
def tokenizer():
    """A WordPiece tokenizer trained in-process (hermetic, ~0.1 s)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _encoder(kind: str, vocab: int):
    from transformers import AutoModel, BertConfig, DebertaV2Config, ModernBertConfig

    small = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, pad_token_id=0)
    cfg = {
        "bert": lambda: BertConfig(**small),
        "modernbert": lambda: ModernBertConfig(**small, global_attn_every_n_layers=1, local_attention=16),
        "deberta": lambda: DebertaV2Config(**small),
    }[kind]()
    torch.manual_seed(0)
    return AutoModel.from_config(cfg)


@pytest.mark.parametrize("kind", ["bert", "modernbert", "deberta"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_any_encoder_round_trips_and_predicts(tmp_path, tokenizer, kind, pooling):
    model = FitClassifier(_encoder(kind, len(tokenizer)), pooling=pooling).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (3, len(FIT_LABELS))

    meta = model.save(tmp_path, {"max_length": 32, "calibration_temperature": 1.5,
                                 "training_data_fingerprint": "abc"}, tokenizer=tokenizer)
    assert (tmp_path / HEAD_FILE).is_file() and (tmp_path / "config.json").is_file()
    on_disk = json.loads((tmp_path / META_FILE).read_text())
    assert on_disk["labels"] == list(FIT_LABELS) and on_disk["pooling"] == pooling
    assert on_disk["max_length"] == 32 and on_disk["calibration_temperature"] == 1.5
    assert on_disk["training_data_fingerprint"] == "abc" and on_disk["version"] == meta["version"]

    loaded, tok, meta2 = load_classifier(tmp_path)
    probs = predict_proba(loaded, tok, TEXTS, max_length=32, batch_size=2, temperature=1.5, bf16=False)
    expected = torch.softmax(logits / 1.5, dim=-1).numpy()
    assert probs.shape == (3, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_batching_and_padding_do_not_change_predictions(tokenizer):
    model = FitClassifier(_encoder("bert", len(tokenizer)), pooling="mean")
    one_by_one = np.concatenate([predict_proba(model, tokenizer, [t], bf16=False) for t in TEXTS])
    batched = predict_proba(model, tokenizer, TEXTS, batch_size=3, bf16=False)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    # bf16 autocast: same answer up to bf16 rounding.
    np.testing.assert_allclose(predict_proba(model, tokenizer, TEXTS, bf16=True), one_by_one, atol=3e-2)
    assert model.training  # predict_proba restores the mode it found


def test_temperature_flattens_and_weights_change_the_version(tmp_path, tokenizer):
    model = FitClassifier(_encoder("bert", len(tokenizer)))
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([2.0, 0.0, -2.0]))
    sharp = predict_proba(model, tokenizer, TEXTS, bf16=False)
    flat = predict_proba(model, tokenizer, TEXTS, temperature=4.0, bf16=False)
    assert (flat.max(axis=1) < sharp.max(axis=1)).all()
    v1 = model.save(tmp_path / "a", {"max_length": 16}, tokenizer=tokenizer)["version"]
    with torch.no_grad():
        model.head.bias.add_(0.5)
    v2 = model.save(tmp_path / "b", {"max_length": 16}, tokenizer=tokenizer)["version"]
    assert v1 != v2


def test_empty_input_and_bad_pooling_and_missing_meta(tmp_path, tokenizer):
    model = FitClassifier(_encoder("bert", len(tokenizer)))
    assert predict_proba(model, tokenizer, []).shape == (0, 3)
    with pytest.raises(ValueError, match="pooling"):
        FitClassifier(_encoder("bert", len(tokenizer)), pooling="max")
    with pytest.raises(FileNotFoundError, match=META_FILE):
        load_classifier(tmp_path)


def test_length_sorted_batches_cover_every_index_once():
    batches = length_sorted_batches([3, 9, 1, 7, 5], batch_size=2)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == [0, 1, 2, 3, 4]
    assert flat.tolist() == [1, 3, 4, 0, 2]  # longest first


def test_export_records_its_text_version_and_a_content_version(tmp_path, tokenizer):
    from lantern_batch import models
    from lantern_batch.prompts import CLASSIFIER_TEXT_VERSION

    model = FitClassifier(_encoder("bert", len(tokenizer)))
    meta = model.save(tmp_path, {"max_length": 16}, tokenizer=tokenizer)
    assert meta["text_version"] == CLASSIFIER_TEXT_VERSION
    # One model version everywhere: the export's version is the directory's content hash.
    assert meta["version"] == "cls-" + models.model_version(tmp_path)


def test_export_of_another_text_version_is_refused_at_load(tmp_path, tokenizer):
    from lantern_batch.errors import InputError
    from lantern_batch.precompute.classifier_stage import read_meta
    from lantern_batch.prompts import CLASSIFIER_TEXT_VERSION

    model = FitClassifier(_encoder("bert", len(tokenizer)))
    model.save(tmp_path, {"max_length": 16, "text_version": "c0"}, tokenizer=tokenizer)
    for load in (read_meta, load_classifier):
        with pytest.raises(InputError) as err:
            load(tmp_path)
        message = str(err.value)
        assert "'c0'" in message and f"'{CLASSIFIER_TEXT_VERSION}'" in message and str(tmp_path) in message
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["text_version"]  # an export that records none was built by an unknown text builder
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(InputError, match="records no text_version"):
        read_meta(tmp_path)
