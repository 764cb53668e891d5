"""Distillation during pretraining: a KL term towards a frozen teacher at the masked positions, normalised
like the MLM loss (so accumulation is exact), and a run with a teacher (and head warm-up) resumes bitwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertwwm.cli import main
from bertwwm.modeling.model import PretrainingModel, bert_config, build_model, save_model
from bertwwm.text.tokens import MASK_ID


def _tiny(seed: int, hidden: int = 32):
    torch.manual_seed(seed)
    return build_model(bert_config("tiny", hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=2),
                       nsp=False)


def _batch(seed: int = 0, rows: int = 4, length: int = 24):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(106, 8000, (rows, length), generator=g)
    chosen = torch.rand(ids.shape, generator=g) < 0.2
    chosen[:, 0] = True
    return {"input_ids": ids.masked_fill(chosen, MASK_ID), "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids), "labels": torch.where(chosen, ids, torch.full_like(ids, -100))}


def test_distillation_reduces_the_kl_on_a_fixed_batch():
    teacher = _tiny(1)
    with torch.no_grad():  # a confident teacher: far from the near-uniform distributions of a fresh student
        teacher.cls.predictions.bias.copy_(3 * torch.randn(teacher.cls.predictions.bias.shape,
                                                           generator=torch.Generator().manual_seed(2)))
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    model = PretrainingModel(_tiny(0), teacher=teacher, distill_temperature=2.0, distill_weight=1.0)
    model.train()
    assert not teacher.training  # .train() on the student leaves the teacher in eval mode (no dropout)
    assert not any(k.startswith("teacher") for k in model.state_dict())
    assert {id(p) for p in model.parameters()}.isdisjoint(id(p) for p in teacher.parameters())
    batch = _batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    kls = []
    for _ in range(30):
        out = model(**batch)
        kls.append(float(out.distill_kl_sum) / out.mlm_count)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert kls[-1] < 0.5 * kls[0], kls
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k


def test_kl_is_normalised_like_the_mlm_loss():
    """Two micro-batches divided by the total number of masked tokens give the one-batch gradient."""
    model = PretrainingModel(_tiny(0), teacher=_tiny(1), distill_temperature=3.0, distill_weight=0.5)
    model.eval()  # no dropout: the two ways must compute the same function
    batch = _batch(rows=6)
    total = int((batch["labels"] != -100).sum())
    model(**batch).loss.backward()
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    for half in (slice(0, 3), slice(3, 6)):
        model(**{k: v[half] for k, v in batch.items()}, mlm_normaliser=float(total)).loss.backward()
    for a, p in zip(whole, model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-4, atol=1e-7)
    out = model(**batch)
    with torch.no_grad():  # the loss is MLM + w * T^2 * KL / count
        expected = out.mlm_loss_sum / total + 0.5 * 9.0 * out.distill_kl_sum / total
    torch.testing.assert_close(out.loss.detach(), expected)


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    from bertwwm.data.prepare import prepare

    root = tmp_path_factory.mktemp("distill")
    lines = (shared_data / "corpus" / "clue-small-sample.txt").read_text(encoding="utf-8").splitlines()[:1200]
    (root / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare([root / "text.txt"], root / "data", max_seq_length=64, dynamic=True, nsp=False, progress=False)
    save_model(_tiny(1, hidden=64), root / "teacher")
    save_model(_tiny(0), root / "student")
    return root


def _pretrain(root: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "--recipe", "tiny-cpu", "--init", str(root / "student"), "--no-nsp",
                 "--data", str(root / "data"), "--out", str(out), "--teacher", str(root / "teacher"),
                 "--distill-temperature", "2", "--distill-weight", "0.5", "--head-warmup-steps", "3",
                 "--max-steps", "6", "--batch-size", "8", "--save-every", "2", "--keep-last", "5",
                 "--threads", "1", "--no-progress", *extra])


@pytest.mark.slow
def test_a_run_with_a_teacher_resumes_bitwise(setup, tmp_path):
    straight = tmp_path / "straight"
    assert _pretrain(setup, straight) == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "final")
    for later in sorted((resumed / "checkpoints").glob("step-*"))[1:]:  # back to step 2, inside the warm-up
        shutil.rmtree(later)
    assert _pretrain(setup, resumed, "--resume") == 0
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(resumed / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    start = load_file(str(setup / "student" / "model.safetensors"))
    step2 = load_file(str(straight / "checkpoints" / "step-00000002" / "model.safetensors"))
    layer = "bert.encoder.layer.0.output.dense.weight"
    assert torch.equal(step2[layer], start[layer]) and not torch.equal(a[layer], start[layer])  # warm-up, then all


def test_a_teacher_with_another_vocabulary_is_one_line(setup, tmp_path, capsys):
    from bertwwm.modeling.vocab_extend import extend_vocab

    corpus = tmp_path / "quotes.txt"
    corpus.write_text("“法律”——\n", encoding="utf-8")
    extend_vocab([corpus], str(setup / "teacher"), tmp_path / "wide", min_count=1)
    capsys.readouterr()
    assert main(["pretrain", "--recipe", "tiny-cpu", "--init", str(setup / "student"), "--no-nsp",
                 "--data", str(setup / "data"), "--out", str(tmp_path / "run"), "--teacher", str(tmp_path / "wide"),
                 "--max-steps", "1", "--batch-size", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bertwwm pretrain: error:")
    assert "21,131-entry vocabulary and the student 21,128" in err[-1]
