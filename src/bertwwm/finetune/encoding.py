"""A split tokenised once for the model: inputs, labels, and length-bucketed batches.

Classification examples become one sequence each (or, with long_text="window", windows of a long text whose
logits are averaged at prediction time); MRC questions become windows over their context
(tasks/mrc.build_features). Batches are bucketed by length (sorted within chunks of 50 batches, chunks and
batches shuffled), so padding stays small without changing what a seed sees from epoch to epoch in
expectation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.finetune.settings import Settings
from bertwwm.tasks.registry import CJRC, Task

BUCKET_CHUNK = 50  # batches per length-sorted chunk


class Encoded:
    """A split, tokenised once: the model inputs (windows for MRC) and what is needed to decode and score."""

    def __init__(self, task: Task, examples: list, tokenizer, settings: Settings):
        self.task, self.examples = task, examples
        if task.is_mrc:
            from bertwwm.tasks.mrc import build_features

            self.features = build_features(examples, tokenizer, settings.max_seq_length, settings.doc_stride,
                                           settings.max_query_length)
            self.input_ids = self.features.input_ids
            self.token_type_ids = self.features.token_type_ids
            self.labels = {"start_positions": np.asarray(self.features.start_positions),
                           "end_positions": np.asarray(self.features.end_positions)}
            if task.kind == CJRC:
                self.labels["answer_class"] = np.asarray(self.features.answer_class)
        else:
            pairs = [e.text_b is not None for e in examples]
            if any(pairs) and not all(pairs):
                raise UserError("mixed single sentences and sentence pairs in one file")
            index = {label: i for i, label in enumerate(task.labels)}
            unknown = sorted({e.label for e in examples if e.label is not None and e.label not in index})
            if unknown:
                raise UserError(f"labels {unknown[:5]} are not labels of {task.name} ({', '.join(task.labels)})")
            labels = [index.get(e.label, -100) for e in examples]
            if settings.long_text == "window" and not any(pairs):
                self._windows(examples, tokenizer, settings, labels)
            else:
                enc = tokenizer([e.text_a for e in examples],
                                [e.text_b for e in examples] if all(pairs) else None, truncation=True,
                                max_length=settings.max_seq_length, return_attention_mask=False, verbose=False)
                self.input_ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
                self.token_type_ids = [np.asarray(x, dtype=np.int64) for x in enc["token_type_ids"]]
                self.example_index = np.arange(len(examples))
                self.labels = {"labels": np.asarray(labels, dtype=np.int64)}
        self.lengths = np.asarray([len(x) for x in self.input_ids])

    def _windows(self, examples: list, tokenizer, settings: Settings, labels: list[int]) -> None:
        """Long single texts (THUCNews articles): windows of max_seq_length tokens, doc_stride apart, each
        trained on the document's label; at prediction time the windows' logits are averaged."""
        from bertwwm.text.tokens import CLS_ID, SEP_ID

        enc = tokenizer([e.text_a for e in examples], add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)
        room = settings.max_seq_length - 2
        step = max(1, min(settings.doc_stride, room))
        self.input_ids, owner = [], []
        for ei, ids in enumerate(enc["input_ids"]):
            start = 0
            while True:
                self.input_ids.append(np.asarray([CLS_ID, *ids[start:start + room], SEP_ID], dtype=np.int64))
                owner.append(ei)
                if start + room >= len(ids):
                    break
                start += step
        self.token_type_ids = [np.zeros_like(x) for x in self.input_ids]
        self.example_index = np.asarray(owner)
        self.labels = {"labels": np.asarray(labels, dtype=np.int64)[self.example_index]}

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, indices: Sequence[int], device, with_labels: bool = True) -> dict:
        import torch

        width = int(self.lengths[indices].max())
        ids = np.zeros((len(indices), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, i in enumerate(indices):
            n = self.lengths[i]
            ids[row, :n] = self.input_ids[i]
            types[row, :n] = self.token_type_ids[i]
            mask[row, :n] = 1
        out = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        if with_labels:
            out.update({k: v[indices] for k, v in self.labels.items()})
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in out.items()}


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar length. With rng: shuffled, sorted within chunks, batch order shuffled.
    Without: sorted by length overall (evaluation; results are put back in the original order)."""
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    batches = []
    chunk = batch_size * BUCKET_CHUNK
    for c in range(0, n, chunk):
        part = order[c:c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches
