"""Dynamic whole word masking at batch time: a collate_fn for torch's DataLoader.

Masks are drawn for the whole batch at once with `bertwwm.data.masking.mask_batch` (the same rules as the static
masks `prepare` writes), so a fresh mask costs about as much as padding the batch.

Randomness: in the main process the collator draws from one numpy Generator seeded with `seed`; its state is
what `state_dict()` saves, so a resumed run continues the exact mask stream. In DataLoader worker processes
each worker reseeds from (seed, torch's per-worker seed): masks then differ between workers and epochs and
are reproducible whenever the DataLoader's own seed is (torch.manual_seed or its `generator=`), but the
worker streams are not part of state_dict().
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bertwwm.core.errors import UserError
from bertwwm.data.masking import MaskingConfig, mask_batch
from bertwwm.data.similar_words import SimilarWords
from bertwwm.text.tokens import IGNORE_INDEX, PAD_ID, VocabInfo


class WholeWordMaskCollator:
    """collate_fn for torch DataLoader: pads a list of prepared items and draws their masks."""

    def __init__(self, cfg: MaskingConfig = MaskingConfig(), vocab: VocabInfo | None = None,
                 seed: int | None = None, pad_to_multiple_of: int | None = None,
                 similar_words: SimilarWords | str | Path | None = None):
        """similar_words: the table (or its file) of the `macbert` policy, e.g. the prepared folder's
        manifest config["similar_words"]["path"]; required by that policy, ignored by the others."""
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be positive, got {pad_to_multiple_of}")
        self.cfg = cfg
        self.vocab = vocab if vocab is not None else VocabInfo.from_vocab()
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of
        if isinstance(similar_words, (str, Path)):
            similar_words = SimilarWords.load(similar_words, self.vocab.size)
        if cfg.policy == "macbert" and similar_words is None:
            raise UserError("the macbert masking policy needs a similar-words table (similar_words=FILE); for "
                            "masks drawn without one, prepare the data with --masking macbert (static masks)")
        self.similar_words = similar_words
        self._rng = np.random.default_rng(seed)
        self._worker_key: tuple[int, int] | None = None
        self._worker_rng: np.random.Generator | None = None

    # -- randomness -----------------------------------------------------------------------------------------
    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self._rng
        key = (os.getpid(), info.id)
        if self._worker_key != key:
            # info.seed = DataLoader base seed (new every epoch) + worker id.
            entropy = [info.seed] if self.seed is None else [self.seed, info.seed]
            self._worker_rng = np.random.default_rng(entropy)
            self._worker_key = key
        return self._worker_rng

    def state_dict(self) -> dict:
        return {"seed": self.seed, "bit_generator": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self._rng = np.random.default_rng(self.seed)
        self._rng.bit_generator.state = state["bit_generator"]

    # -- collation ------------------------------------------------------------------------------------------
    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        if not batch:
            raise ValueError("cannot collate an empty batch")
        static = "labels" in batch[0]
        if any(("labels" in item) != static for item in batch):
            raise ValueError("a batch mixes statically masked items (with labels) and unmasked ones")
        lengths = np.fromiter((len(item["input_ids"]) for item in batch), dtype=np.int64, count=len(batch))
        ids = np.concatenate([np.asarray(item["input_ids"]) for item in batch]).astype(np.int64, copy=False)
        n_rows = len(batch)
        width = int(lengths.max())
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of

        if static:
            masked = ids
            labels_flat = np.concatenate([np.asarray(item["labels"]) for item in batch]).astype(np.int64)
        else:
            if any("word_starts" not in item for item in batch):
                raise ValueError("dynamic masking needs 'word_starts' in every item "
                                 "(bertwwm prepare --dynamic stores them)")
            word_starts = np.concatenate([np.asarray(item["word_starts"]) for item in batch]).astype(bool)
            masked, chosen = mask_batch(ids, word_starts, lengths, self.cfg, self._generator(), self.vocab,
                                        self.similar_words)
            labels_flat = np.where(chosen, ids, IGNORE_INDEX)

        # Flat position of every token in the padded (rows x width) matrix.
        row_start = np.cumsum(lengths) - lengths
        slot = np.arange(len(ids)) - np.repeat(row_start, lengths) + np.repeat(np.arange(n_rows) * width, lengths)

        def padded(values: np.ndarray, fill: int) -> torch.Tensor:
            out = np.full(n_rows * width, fill, dtype=np.int64)
            out[slot] = values
            return torch.from_numpy(out.reshape(n_rows, width))

        attention = np.zeros(n_rows * width, dtype=np.int64)
        attention[slot] = 1
        if "token_type_ids" in batch[0]:
            types = np.concatenate([np.asarray(item["token_type_ids"]) for item in batch])
        else:
            types = np.zeros(len(ids), dtype=np.int64)
        out = {
            "input_ids": padded(masked, PAD_ID),
            "attention_mask": torch.from_numpy(attention.reshape(n_rows, width)),
            "token_type_ids": padded(types, 0),
            "labels": padded(labels_flat, IGNORE_INDEX),
        }
        if "next_sentence_label" in batch[0]:
            out["next_sentence_label"] = torch.tensor([int(item["next_sentence_label"]) for item in batch],
                                                      dtype=torch.long)
        return out
