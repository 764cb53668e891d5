"""Held-out MLM evaluation for `pretrain`: fixed masks at BERT's rate, and the unigram reference line.

A model on the MLM plateau predicts every masked token from its frequency alone, so its held-out loss is
the unigram cross-entropy of the masked tokens and its accuracy is the share of the most frequent token.
Logging those two numbers next to the held-out loss and accuracy makes a plateau visible at a glance:
a model learns from context exactly when it falls below the reference.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.modeling.model import IGNORE_INDEX

EVAL_SEED = 20190620  # held-out masks are drawn with a fixed seed: the same masks at every evaluation


def spread(n_total: int, n: int) -> list[int]:
    """`n` indices spread evenly over range(n_total) (all of them when n >= n_total)."""
    if n >= n_total:
        return list(range(n_total))
    return np.linspace(0, n_total - 1, n).round().astype(int).tolist()


def check_heldout(manifest: dict, folder: str | Path, max_seq_length: int) -> None:
    """A held-out folder must fit the shortest phase it is evaluated in."""
    length = manifest["max_seq_length"]
    if length > max_seq_length:
        raise UserError(f"the held-out folder was prepared at max length {length}, longer than the phase's "
                        f"{max_seq_length}; prepare it with --max-seq-length {max_seq_length}",
                        Path(folder) / "manifest.json")


def heldout_items(folder: str | Path, n: int, max_seq_length: int) -> list[dict]:
    """Up to `n` instances spread over a prepared folder of held-out text."""
    from bertwwm.data.storage import PreparedDataset

    dataset = PreparedDataset(folder)
    check_heldout(dataset.manifest, folder, max_seq_length)
    if len(dataset) == 0:
        raise UserError("the held-out folder holds no instances", folder)
    return [dataset[i] for i in spread(len(dataset), n)]


def unigram_log_probs(dataset, eval_items: list[dict], vocab_size: int, smoothing: float = 1.0) -> np.ndarray:
    """log p(token) over the training text (all instances less the held-out ones), add-`smoothing` smoothed."""
    return smoothed_log_probs(training_token_counts(dataset, eval_items, vocab_size), smoothing)


def smoothed_log_probs(counts: np.ndarray, smoothing: float) -> np.ndarray:
    counts = counts.astype(np.float64) + smoothing
    return np.log(counts / counts.sum())


def training_token_counts(dataset, eval_items: list[dict], vocab_size: int) -> np.ndarray:
    """How often each token occurs in the training text: all instances less the held-out ones."""
    counts = dataset.token_counts(vocab_size)[:vocab_size].copy()
    for item in eval_items:  # the data's held-out tail is not training text
        ids = np.asarray(item["input_ids"]).copy()
        labels = item.get("labels")
        if labels is not None:  # static masks: count the original tokens
            masked = labels != IGNORE_INDEX
            ids[masked] = labels[masked]
        counts -= np.bincount(ids, minlength=vocab_size)[:vocab_size]
    return counts


def evaluation_collator(policy: str, mask_prob: float, max_predictions: int, decide_per: str,
                        similar_words: str | None = None):
    from bertwwm.data.collate import WholeWordMaskCollator
    from bertwwm.data.masking import MaskingConfig

    cfg = MaskingConfig(policy=policy, mask_prob=mask_prob, max_predictions=max(1, max_predictions),
                        decide_per=decide_per)
    return WholeWordMaskCollator(cfg, seed=EVAL_SEED, pad_to_multiple_of=8, similar_words=similar_words)


def evaluate(model, batches: list[dict], device, log_probs: np.ndarray | None = None,
             autocast=contextlib.nullcontext) -> dict:
    """Held-out MLM (and NSP) loss and accuracy over collated `batches`; with `log_probs`, the unigram
    reference of the same masked tokens too."""
    import torch

    was_training = model.training
    model.eval()
    sums = np.zeros(8)  # mlm loss, correct, count; nsp loss, correct, count; unigram loss, correct
    best = int(np.argmax(log_probs)) if log_probs is not None else -1
    with torch.no_grad(), autocast():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            sums[:6] += [float(out.mlm_loss_sum), float(out.mlm_correct), out.mlm_count,
                         float(out.nsp_loss_sum or 0.0), float(out.nsp_correct or 0), out.nsp_count]
            if log_probs is not None:
                targets = batch["labels"][batch["labels"] != IGNORE_INDEX].cpu().numpy()
                sums[6] -= float(log_probs[targets].sum())
                sums[7] += float((targets == best).sum())
    model.train(was_training)
    count = max(sums[2], 1)
    record = {"mlm_loss": sums[0] / count, "mlm_acc": sums[1] / count,
              "instances": sum(len(b["input_ids"]) for b in batches)}
    if log_probs is not None:
        record.update(unigram_loss=sums[6] / count, unigram_acc=sums[7] / count)
    if sums[5]:
        record.update(nsp_loss=sums[3] / sums[5], nsp_acc=sums[4] / sums[5])
    weight = model.hf.get_input_embeddings().weight
    if weight.dim() == 2 and weight.shape[0] > 1:  # not a shard of a flattened FSDP parameter
        record["embedding_cosine"] = embedding_cosine(weight)
    return record


def embedding_cosine(weight, rows: int = 2000) -> float:
    """Mean pairwise cosine of `rows` fixed random rows of the word embeddings: ~0 for a random init, near 1
    when the rows have all drifted one way (the degeneration `output_bias = "unigram"` prevents), a warning
    sign for fine-tuning (docs/pretrain-small-budget.md)."""
    import torch

    with torch.no_grad():
        picked = torch.randperm(weight.shape[0], generator=torch.Generator().manual_seed(0))[:rows]
        unit = torch.nn.functional.normalize(weight.detach()[picked].float().cpu(), dim=1)
        n = len(unit)
        return float(((unit @ unit.T).sum() - n) / max(n * n - n, 1))



def last_heldout(run: str | Path) -> dict:
    """A pretraining run's last held-out evaluation from RUN/metrics.jsonl (empty when it has none), with the
    wall time of its last logged training step as `elapsed_s`."""
    import json

    last_eval, elapsed = {}, None
    path = Path(run) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("split") == "eval":
                    last_eval = record
                elif record.get("split") == "train":
                    elapsed = record.get("elapsed_s")
    return {**last_eval, "elapsed_s": elapsed} if last_eval else {}
