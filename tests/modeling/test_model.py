"""The gathered MLM head equals transformers' full head; saved folders load in plain transformers."""

from __future__ import annotations

import pytest
import torch

from bertwwm.core.errors import UserError
from bertwwm.modeling.model import PRESETS, PretrainingModel, bert_config, build_model, count_parameters, save_model
from bertwwm.text.tokens import VOCAB_SIZE


def _batch(seed: int = 0, batch: int = 3, length: int = 24):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(200, VOCAB_SIZE, (batch, length), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1, 18:] = 0  # a padded row
    input_ids[1, 18:] = 0
    token_type_ids = torch.zeros(batch, length, dtype=torch.long)
    token_type_ids[:, 12:] = 1
    labels = torch.full((batch, length), -100)
    for row, positions in enumerate([[3, 4, 9], [1, 2, 15], [20]]):
        labels[row, positions] = input_ids[row, positions]
        input_ids[row, positions] = 103
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids), labels


def test_presets_have_the_issue_shapes():
    for name, (layers, hidden, heads, inter) in PRESETS.items():
        c = bert_config(name)
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == \
            (layers, hidden, heads, inter)
        assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size) == (VOCAB_SIZE, 512, 2)
    assert PRESETS["small"] == (4, 256, 4, 1024) and PRESETS["large"] == (24, 1024, 16, 4096)
    with pytest.raises(UserError):
        bert_config("huge")


@pytest.mark.parametrize("nsp", [False, True])
def test_gathered_head_equals_full_head_and_saved_folder_loads(tmp_path, nsp):
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer

    torch.manual_seed(0)
    hf = build_model(bert_config("tiny", dropout=0.0), nsp=nsp).eval()
    model = PretrainingModel(hf).eval()
    inputs, labels = _batch()
    nsp_label = torch.tensor([0, 1, 0]) if nsp else None
    with torch.no_grad():
        out = model(**inputs, labels=labels, next_sentence_label=nsp_label)
        full = hf(**inputs)
    full_logits = full.prediction_logits if nsp else full.logits
    mask = labels != -100
    # Gathered logits are the full head's logits at the masked positions, in row-major order.
    torch.testing.assert_close(out.mlm_logits, full_logits[mask], rtol=1e-5, atol=1e-5)
    want_loss = torch.nn.functional.cross_entropy(full_logits[mask], labels[mask])
    torch.testing.assert_close(out.mlm_loss_sum / out.mlm_count, want_loss, rtol=1e-5, atol=1e-6)
    assert out.mlm_count == 7
    assert int(out.mlm_correct) == int((full_logits[mask].argmax(-1) == labels[mask]).sum())
    if nsp:
        want = torch.nn.functional.cross_entropy(full.seq_relationship_logits, nsp_label, reduction="sum")
        torch.testing.assert_close(out.nsp_loss_sum, want, rtol=1e-5, atol=1e-6)

    # Tied weights stay tied in the wrapper: the decoder *is* the word embedding matrix.
    assert hf.cls.predictions.decoder.weight is hf.bert.embeddings.word_embeddings.weight
    names = {n for n, _ in model.named_parameters()}
    assert "hf.cls.predictions.transform.dense.weight" in names

    folder = tmp_path / "saved"
    save_model(model, folder)
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    loaded = AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        logits = loaded(**inputs).logits
    assert torch.equal(logits, full_logits)  # same weights, same modules: bitwise equal
    if nsp:
        pre = AutoModelForPreTraining.from_pretrained(folder).eval()
        with torch.no_grad():
            p = pre(**inputs)
        assert torch.equal(p.prediction_logits, full_logits)
        assert torch.equal(p.seq_relationship_logits, full.seq_relationship_logits)
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == VOCAB_SIZE and tok.convert_tokens_to_ids("的") == 4638


def test_gradients_match_full_head():
    torch.manual_seed(1)
    hf = build_model(bert_config("tiny", dropout=0.0), nsp=False)
    model = PretrainingModel(hf)
    inputs, labels = _batch(seed=3)
    model(**inputs, labels=labels).loss.backward()
    ours = {n: p.grad.clone() for n, p in hf.named_parameters()}
    hf.zero_grad()
    hf(**inputs, labels=labels).loss.backward()
    for n, p in hf.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_restricted_output_is_the_softmax_over_those_tokens():
    """restrict_output: in training, the loss is the cross-entropy over the given tokens' columns of the full
    head's logits, tokens outside get no gradient, and eval mode scores the whole vocabulary again."""
    torch.manual_seed(2)
    hf = build_model(bert_config("tiny", dropout=0.0), nsp=False)
    model = PretrainingModel(hf)
    inputs, labels = _batch(seed=4)
    targets = labels[labels != -100]
    allowed = torch.cat([targets, torch.arange(5000, 5300)])  # the targets and some others, unsorted, repeated
    model.restrict_output(torch.cat([allowed, targets]))
    out = model(**inputs, labels=labels)
    ids = allowed.unique()
    full = hf(**inputs).logits[labels != -100]
    expected = torch.nn.functional.cross_entropy(full[:, ids], torch.searchsorted(ids, targets), reduction="sum")
    torch.testing.assert_close(out.mlm_loss_sum, expected.detach(), rtol=1e-5, atol=1e-4)
    assert out.mlm_logits.shape == (len(targets), len(ids))
    out.loss.backward()
    grad = hf.cls.predictions.bias.grad
    outside = torch.ones(VOCAB_SIZE, dtype=torch.bool)
    outside[ids] = False
    assert grad[outside].abs().max() == 0 and grad[ids].abs().max() > 0
    word_grad = hf.bert.embeddings.word_embeddings.weight.grad  # tied: decoder rows + input lookups
    untouched = outside.clone()
    untouched[inputs["input_ids"].unique()] = False
    assert word_grad[untouched].abs().max() == 0

    model.eval()
    with torch.no_grad():
        evaluated = model(**inputs, labels=labels)
    assert evaluated.mlm_logits.shape[-1] == VOCAB_SIZE
    model.train()
    model.restrict_output(torch.arange(5000, 5300))  # a target outside the set: this batch scores everything
    assert model(**inputs, labels=labels).mlm_logits.shape[-1] == VOCAB_SIZE
    model.restrict_output(None)
    assert model(**inputs, labels=labels).mlm_logits.shape[-1] == VOCAB_SIZE


def test_count_parameters_counts_tied_weights_once():
    hf = build_model(bert_config("tiny"), nsp=False)
    assert count_parameters(hf) == sum(p.numel() for p in hf.parameters())
    assert count_parameters(hf) < sum(p.numel() for p in hf.state_dict().values())


def _zipf_corpus(rng, rows: int = 64, length: int = 32):
    """300 frequent tokens drawn by Zipf's law; the rest of the vocabulary never occurs (as in a small corpus).
    The unigram table is that of a 1M-token corpus with this distribution, add-one smoothed."""
    import numpy as np

    vocab = np.arange(1000, 1300)
    p = 1 / np.arange(1, 301)
    p /= p.sum()
    counts = np.ones(VOCAB_SIZE)
    counts[vocab] += p * 1e6
    return rng.choice(vocab, size=(rows, length), p=p), np.log(counts / counts.sum())


def test_output_bias_starts_the_model_on_the_unigram_loss():
    import numpy as np

    from bertwwm.modeling.model import set_output_bias

    data, log_probs = _zipf_corpus(np.random.default_rng(0))
    ids = torch.tensor(data[:16])
    labels = ids.clone()
    inputs = dict(input_ids=torch.full_like(ids, 103), attention_mask=torch.ones_like(ids),
                  token_type_ids=torch.zeros_like(ids))
    unigram_loss = float(-torch.tensor(log_probs)[ids].mean())
    for bias, expected in (("zero", float(np.log(VOCAB_SIZE))), ("unigram", unigram_loss)):
        torch.manual_seed(0)
        hf = build_model(bert_config("tiny", dropout=0.0), nsp=False)
        if bias == "unigram":
            set_output_bias(hf, log_probs)
            assert torch.equal(hf.cls.predictions.bias, torch.tensor(log_probs, dtype=torch.float32))
        with torch.no_grad():
            loss = float(PretrainingModel(hf)(**inputs, labels=labels).loss)
        assert abs(loss - expected) < 0.2, (bias, loss, expected)  # the tied decoder adds logits of sd ~0.2
    with pytest.raises(UserError, match="output tokens"):
        set_output_bias(hf, log_probs[:100])


@pytest.mark.slow  # real training: the full suite runs it, the edit-test loop does not
def test_unigram_output_bias_keeps_unseen_embeddings_apart():
    """The degeneration it prevents (docs/pretrain-small-budget.md): with a zero bias, Adam and the tied decoder
    move the rows of tokens the corpus never shows along one common direction within a few steps."""
    import numpy as np

    from bertwwm.modeling.model import set_output_bias
    from bertwwm.modeling.optim import parameter_groups

    def unseen_rows_mean_cosine(bias: str) -> float:
        rng = np.random.default_rng(0)
        data, log_probs = _zipf_corpus(rng)
        torch.manual_seed(0)
        hf = build_model(bert_config("tiny", dropout=0.0), nsp=False)
        if bias == "unigram":
            set_output_bias(hf, log_probs)
        model = PretrainingModel(hf)
        opt = torch.optim.AdamW(parameter_groups(hf, 0.01), lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
        for _ in range(20):
            ids = torch.tensor(data[rng.integers(0, len(data), 8)])
            masked = torch.rand(ids.shape, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30)))) < 0.4
            labels = torch.where(masked, ids, torch.full_like(ids, -100))
            model(input_ids=torch.where(masked, torch.full_like(ids, 103), ids), attention_mask=torch.ones_like(ids),
                  token_type_ids=torch.zeros_like(ids), labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
        rows = hf.bert.embeddings.word_embeddings.weight.detach()[5000:7000]  # never in the corpus
        unit = rows / rows.norm(dim=1, keepdim=True)
        n = len(unit)
        return float(((unit @ unit.T).sum() - n) / (n * n - n))

    zero, unigram = unseen_rows_mean_cosine("zero"), unseen_rows_mean_cosine("unigram")
    assert zero > 0.25 and unigram < 0.15, (zero, unigram)  # measured ~0.40 and ~0.09
