"""Is a model's MLM head there, and trained? One cheap probe before fill-mask, convert and continued pretraining.

Released checkpoints sometimes lack the MLM head (`cls.predictions.*`), and transformers then initialises it
at random without a word; fill-mask returns noise and continued pretraining starts from a random head. Two
checks, each a fraction of a second:

* missing: the checkpoint's weight files hold no `cls.predictions` tensor (read from the file index only);
* untrained: on ~400 tokens of the shipped law corpus with every 7th token masked, the head's cross-entropy
  is no better than 90% of a uniform guess over the vocabulary (ln V). A random head sits at ln V or above;
  any head trained even to the unigram level of Chinese text (~6.5 nats) is far below the threshold.

`bertwwm pretrain --head-warmup-steps N` then trains the head alone for the first N steps: `freeze_body_grads`
drops the gradients of everything else after each backward, so the optimizer leaves those weights (and their
optimizer state) untouched. That is a pure function of the step, so a resumed run stays exact.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bertwwm.text.tokens import VOCAB_SIZE

PROBE_TOKENS = 384            # tokens of the shipped corpus the probe reads (3 sequences of 128)
PROBE_SEQ = 128
MASK_EVERY = 7                # every 7th token of a sequence is masked (~14%, like BERT's 15%)
UNTRAINED_FRACTION = 0.9      # untrained when the loss is >= 90% of ln(vocab size)
HEAD_PREFIX = "cls.predictions"


@dataclass
class HeadReport:
    status: str                # "ok", "missing", "untrained" or "skipped" (not a Chinese-vocabulary BERT)
    accuracy: float = float("nan")
    loss: float = float("nan")
    masked: int = 0
    uniform_loss: float = float("nan")

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped")


@contextlib.contextmanager
def quiet_transformers():
    """No load report and no "Loading weights" bar: the head check says in one line what matters."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _corpus_path() -> Path:
    return Path(str(resources.files("bertwwm") / "resources" / "corpus" / "prc-laws-sample.txt.gz"))


@functools.cache
def probe_batch() -> tuple[np.ndarray, np.ndarray]:
    """(input ids with [CLS]/[SEP], labels with -100 where not masked), both (3, 128), from the shipped corpus.

    Law text is Chinese characters and punctuation, each its own token, so a vocabulary lookup per character
    gives the tokenizer's ids without paying seconds to build the tokenizer."""
    from bertwwm.text.tokens import CLS_ID, MASK_ID, SEP_ID, UNK_ID, load_vocab

    vocab = load_vocab()
    ids: list[int] = []
    with gzip.open(_corpus_path(), "rt", encoding="utf-8") as f:
        for line in f:
            ids.extend(vocab.get(ch, UNK_ID) for ch in line.lower() if not ch.isspace())
            if len(ids) >= PROBE_TOKENS:
                break
    body = PROBE_SEQ - 2
    rows = np.array(ids[:body * (PROBE_TOKENS // PROBE_SEQ)], dtype=np.int64).reshape(-1, body)
    full = np.concatenate([np.full((len(rows), 1), CLS_ID), rows, np.full((len(rows), 1), SEP_ID)], axis=1)
    masked = np.zeros(full.shape, dtype=bool)
    masked[:, 1:-1] = (np.arange(body) % MASK_EVERY == MASK_EVERY // 2)[None, :]
    masked &= full != UNK_ID  # never ask for [UNK]
    labels = np.where(masked, full, -100)
    inputs = np.where(masked, MASK_ID, full)
    return inputs, labels


def probe_mlm_head(model) -> HeadReport:
    """Masked-token accuracy and loss of a transformers BERT MLM model (or bertwwm's PretrainingModel)."""
    import torch
    import torch.nn.functional as F

    hf = getattr(model, "hf", model)
    if hf.config.vocab_size < VOCAB_SIZE or hf.config.max_position_embeddings < PROBE_SEQ:
        return HeadReport("skipped")  # the probe is Chinese text in Google's vocabulary, 128 tokens a row
    inputs, labels = probe_batch()
    device = next(hf.parameters()).device
    was_training = hf.training
    hf.eval()
    try:
        with torch.no_grad():
            ids = torch.from_numpy(inputs).to(device)
            hidden = hf.bert(ids, attention_mask=torch.ones_like(ids), return_dict=True).last_hidden_state
            target = torch.from_numpy(labels).to(device).reshape(-1)
            keep = target != -100
            logits = hf.cls.predictions(hidden.reshape(-1, hidden.shape[-1])[keep]).float()
            loss = float(F.cross_entropy(logits, target[keep]))
            accuracy = float((logits.argmax(-1) == target[keep]).float().mean())
    finally:
        hf.train(was_training)
    uniform = math.log(hf.config.vocab_size)
    status = "untrained" if not loss < UNTRAINED_FRACTION * uniform else "ok"
    return HeadReport(status, accuracy, loss, int(keep.sum()), uniform)


def checkpoint_keys(path: str | Path) -> list[str] | None:
    """Tensor names in a transformers model folder's weight files (None: cannot tell), without loading them."""
    path = Path(path)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index_name).is_file():
            try:
                return list(json.loads((path / index_name).read_text(encoding="utf-8"))["weight_map"])
            except (OSError, ValueError, KeyError):
                return None
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path / "model.safetensors"), framework="pt") as f:
                return list(f.keys())
        except Exception:  # unreadable weights: loading will say so
            return None
    if (path / "pytorch_model.bin").is_file():
        import torch

        try:
            return list(torch.load(path / "pytorch_model.bin", map_location="meta", weights_only=True))
        except Exception:
            return None
    return None


def checkpoint_has_mlm_head(path: str | Path) -> bool | None:
    """Whether a model folder's weight files hold `cls.predictions.*` (None: cannot tell)."""
    keys = checkpoint_keys(path)
    return None if keys is None else any(HEAD_PREFIX in k for k in keys)


ADVICE = {
    "pretrain": "continued pretraining starts from a random head; pass --head-warmup-steps N (e.g. 500) to train "
                "the head alone first",
    "fill-mask": "its fillings are noise; continue pretraining it first (bertwwm pretrain --init MODEL "
                 "--head-warmup-steps 500)",
    "convert": "fill-mask from this model gives noise; check that the source checkpoint holds the MLM head "
               "(cls/predictions: Google's and HFL's releases do), or train it with bertwwm pretrain --init "
               "--head-warmup-steps 500",
}


def _chinese_vocabulary(path: str | Path | None) -> bool:
    """False when the folder's vocab.txt is not Google's Chinese one (or an extension of it)."""
    from bertwwm.text.tokens import load_vocab

    vocab = Path(path) / "vocab.txt" if path is not None else None
    if vocab is None or not vocab.is_file():
        return True
    try:
        return list(load_vocab(str(vocab)))[:VOCAB_SIZE] == list(load_vocab())
    except Exception:  # unreadable vocabulary: loading the tokenizer will say so
        return False


def check_mlm_head(model, path: str | Path | None, verb: str, *, warmup_steps: int = 0, advice: str | None = None,
                   subject: str = "the MLM head", stream=None) -> HeadReport:
    """Probe `model` (loaded from `path`, if known) and print one warning line when its head is missing or
    untrained. Returns the report; never raises for a bad head (the model is still usable for training)."""
    has_head = checkpoint_has_mlm_head(path) if path is not None else None
    report = probe_mlm_head(model) if _chinese_vocabulary(path) else HeadReport("skipped")
    if has_head is False:
        report.status = "missing"
    if report.ok:
        return report
    if report.status == "missing":
        what = (f"{subject} is missing from the checkpoint (no cls.predictions weights), so transformers "
                "initialised it at random")
    else:
        what = (f"{subject} looks untrained (masked-token accuracy {report.accuracy:.1%}, loss "
                f"{report.loss:.2f} against {report.uniform_loss:.2f} for a uniform guess, on {report.masked} "
                "masked tokens of the shipped law corpus)")
    if advice is None:
        advice = ADVICE.get(verb, "")
        if verb == "pretrain" and warmup_steps:
            advice = f"the head trains alone for the first {warmup_steps} steps (--head-warmup-steps)"
    print(f"bertwwm {verb}: warning: {what}: {advice}", file=stream or sys.stderr)
    return report


# ---------------------------------------------------------------------------------------------- warm-up

def head_parameter_names(hf_model) -> set[str]:
    """Parameters the head warm-up trains: the MLM transform and bias (and the NSP classifier), not the decoder
    matrix, which is tied to the input embeddings."""
    tied = {id(hf_model.get_input_embeddings().weight)}
    return {name for name, p in hf_model.named_parameters()
            if name.startswith("cls.") and id(p) not in tied}


def freeze_body_grads(model) -> None:
    """Drop the gradients of every parameter outside the head (call after backward, before clipping and the
    optimizer step): optimizers skip parameters without a gradient, weight decay included."""
    hf = getattr(model, "hf", model)
    keep = getattr(hf, "_bertwwm_head_names", None)
    if keep is None:
        keep = hf._bertwwm_head_names = head_parameter_names(hf)
    for name, p in hf.named_parameters():
        if name not in keep:
            p.grad = None
