"""WholeWordMaskCollator: padding, the same masking rules as mask_instance, determinism, resume, workers."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

from bertwwm.text.align import WordAligner
from bertwwm.data.collate import IGNORE_INDEX, WholeWordMaskCollator
from bertwwm.data.masking import MaskingConfig, budget, mask_batch
from bertwwm.text.tokens import CLS_ID, MASK_ID, PAD_ID, SEP_ID, VocabInfo
from reference import SPECIAL, word_groups


@pytest.fixture(scope="module")
def items(shared_data) -> list[dict]:
    """Real instances of varying length: [CLS] A [SEP] B [SEP] with segment ids and NSP labels."""
    with open(shared_data / "corpus" / "clue-small-sample.txt", encoding="utf-8") as f:
        lines = [line.strip() for line in itertools.islice(f, 600) if line.strip()]
    aligned = WordAligner("rjieba").align_many(lines)
    out = []
    for k in range(0, len(aligned) - 1, 2):
        a, b = aligned[k], aligned[k + 1]
        a_ids, a_st = a.ids[:60], a.word_starts[:60]
        b_ids, b_st = b.ids[:60], b.word_starts[:60]
        ids = np.concatenate(([CLS_ID], a_ids, [SEP_ID], b_ids, [SEP_ID])).astype(np.int64)
        starts = np.concatenate(([True], a_st, [True], b_st, [True]))
        types = np.zeros(len(ids), dtype=np.int64)
        types[len(a_ids) + 2:] = 1
        out.append({"input_ids": ids, "word_starts": starts.astype(np.uint8), "token_type_ids": types,
                    "next_sentence_label": k % 4 // 2})
    return out


def batches(items, size=16):
    return [items[i:i + size] for i in range(0, len(items), size)]


def test_output_layout(items):
    batch = items[:8]
    out = WholeWordMaskCollator(seed=0, pad_to_multiple_of=8)(batch)
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"}
    lengths = [len(item["input_ids"]) for item in batch]
    width = -(-max(lengths) // 8) * 8
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert out[key].shape == (8, width) and out[key].dtype == torch.long
    assert out["next_sentence_label"].tolist() == [item["next_sentence_label"] for item in batch]
    for row, (item, n) in enumerate(zip(batch, lengths)):
        assert out["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert out["input_ids"][row, n:].eq(PAD_ID).all() and out["labels"][row, n:].eq(IGNORE_INDEX).all()
        assert out["token_type_ids"][row, :n].tolist() == item["token_type_ids"].tolist()


def test_same_rules_as_mask_instance(items):
    cfg = MaskingConfig()
    collate = WholeWordMaskCollator(cfg, seed=1)
    random_ids = set(VocabInfo.from_vocab().random_ids.tolist())
    counts = np.zeros(3)
    for _ in range(3):
        for batch in batches(items):
            out = collate(batch)
            for row, item in enumerate(batch):
                ids = item["input_ids"]
                n = len(ids)
                labels = out["labels"][row, :n].numpy()
                masked = out["input_ids"][row, :n].numpy()
                chosen = labels != IGNORE_INDEX
                assert np.array_equal(labels[chosen], ids[chosen])  # labels are the original ids
                assert np.array_equal(masked[~chosen], ids[~chosen])
                assert chosen.sum() <= budget(n, cfg)
                assert not SPECIAL & set(ids[chosen].tolist())
                left = budget(n, cfg) - chosen.sum()
                for group in word_groups(ids, item["word_starts"].astype(bool)):
                    hit = chosen[group]
                    assert hit.all() or not hit.any()  # whole words only
                    if not hit.any():
                        assert len(group) > left  # skipped only when it could not fit
                new = masked[chosen]
                is_mask, is_kept = new == MASK_ID, new == ids[chosen]
                assert set(new[~is_mask & ~is_kept].tolist()) <= random_ids
                counts += [is_mask.sum(), (~is_mask & ~is_kept).sum(), is_kept.sum()]
    share = counts / counts.sum()
    assert abs(share[0] - 0.8) < 0.03 and abs(share[1] - 0.1) < 0.03 and abs(share[2] - 0.1) < 0.03


def test_masks_are_mask_batch_with_the_collators_generator(items):
    batch = items[:12]
    out = WholeWordMaskCollator(seed=5)(batch)
    ids = np.concatenate([item["input_ids"] for item in batch])
    starts = np.concatenate([item["word_starts"] for item in batch]).astype(bool)
    lengths = np.array([len(item["input_ids"]) for item in batch])
    masked, chosen = mask_batch(ids, starts, lengths, MaskingConfig(), np.random.default_rng(5))
    got = out["input_ids"][out["attention_mask"].bool()].numpy()
    assert np.array_equal(got, masked)
    assert np.array_equal(out["labels"][out["attention_mask"].bool()].numpy() != IGNORE_INDEX, chosen)


def test_deterministic_with_a_seed(items):
    run = lambda seed: [WholeWordMaskCollator(seed=seed)(b) for b in batches(items)[:4]]  # noqa: E731
    first, again, other = run(3), run(3), run(4)
    for a, b in zip(first, again):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a["labels"], c["labels"]) for a, c in zip(first, other))
    # consecutive batches of the same items get fresh masks (dynamic masking)
    collate = WholeWordMaskCollator(seed=3)
    assert not torch.equal(collate(items[:16])["labels"], collate(items[:16])["labels"])


def test_state_dict_resumes_the_exact_stream(items):
    collate = WholeWordMaskCollator(seed=9)
    for batch in batches(items)[:3]:
        collate(batch)
    state = pickle.loads(pickle.dumps(collate.state_dict()))  # as a checkpoint stores it
    expected = [collate(batch) for batch in batches(items)[3:6]]
    resumed = WholeWordMaskCollator(seed=123)
    resumed.load_state_dict(state)
    for want, batch in zip(expected, batches(items)[3:6]):
        got = resumed(batch)
        assert all(torch.equal(want[k], got[k]) for k in want)


def test_static_items_pass_through(items):
    batch = []
    for item in items[:4]:
        labels = np.full(len(item["input_ids"]), IGNORE_INDEX, dtype=np.int64)
        labels[2] = item["input_ids"][2]
        masked = item["input_ids"].copy()
        masked[2] = MASK_ID
        batch.append({"input_ids": masked, "word_starts": item["word_starts"], "labels": labels})
    out = WholeWordMaskCollator(seed=0)(batch)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        assert out["input_ids"][row, :n].tolist() == item["input_ids"].tolist()
        assert out["labels"][row, :n].tolist() == item["labels"].tolist()
        assert out["token_type_ids"][row].eq(0).all()
    assert "next_sentence_label" not in out
    with pytest.raises(ValueError, match="mixes"):
        WholeWordMaskCollator()(batch[:1] + [items[0]])
    with pytest.raises(ValueError, match="word_starts"):
        WholeWordMaskCollator()([{"input_ids": items[0]["input_ids"]}])


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_dataloader_workers_are_seeded_and_deterministic(items):
    same = [items[0]] * 32  # identical items: any difference comes from the masks

    def epoch(seed: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(ListDataset(same), batch_size=8, num_workers=2,
                                             collate_fn=WholeWordMaskCollator(seed=0),
                                             generator=torch.Generator().manual_seed(seed))
        return [batch["labels"] for batch in loader]

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # reproducible
    assert any(not torch.equal(a, b) for a, b in zip(first, other))  # a new epoch seed, new masks
    rows = torch.cat(first)
    # Both workers (batches 0 and 1) and successive batches draw different masks.
    assert len({tuple(r.tolist()) for r in rows}) > 16
