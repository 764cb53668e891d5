"""The prepared-data format: shards of .npy arrays, manifest checks, PreparedDataset items."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch

from bertwwm.data import storage
from bertwwm.data.collate import WholeWordMaskCollator
from bertwwm.core.errors import UserError
from bertwwm.data.storage import FORMAT_VERSION, PreparedDataset, read_manifest, read_shard_entry, write_shard


def _shard_arrays(static: bool, nsp: bool) -> dict[str, np.ndarray]:
    # two instances: [CLS] 我 爱 北京 [SEP] 天 安 门 [SEP]  and  [CLS] 你 好 [SEP] 再 见 [SEP]
    ids = [101, 2769, 4263, 1266, 776, 102, 1921, 2128, 7305, 102, 101, 872, 1962, 102, 1086, 6224, 102]
    starts = [1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1]
    arrays = {
        "input_ids": np.array(ids), "word_starts": np.array(starts), "offsets": np.array([0, 10, 17]),
        "segment_b_start": np.array([6, 4]),
    }
    if nsp:
        arrays["nsp_labels"] = np.array([0, 1])
    if static:  # instance 0: 北京 masked ([MASK] and a random 1921); instance 1: 再 kept as is
        arrays.update(mlm_offsets=np.array([0, 2, 3]), mlm_positions=np.array([3, 4, 4]),
                      mlm_input_ids=np.array([103, 1921, 1086]))
    return arrays


def _folder(tmp_path, static=True, nsp=True, shards=1):
    entries = [write_shard(tmp_path, k, _shard_arrays(static, nsp), {"index": k}) for k in range(shards)]
    manifest = {"format_version": FORMAT_VERSION, "complete": True, "config": {"seed": 1},
                "masking": "static" if static else "dynamic", "nsp": nsp, "max_seq_length": 16,
                "dupe_factor": 1, "shards": entries, "counts": {"instances": 2 * shards}}
    storage.write_manifest(tmp_path, manifest)
    return tmp_path


def test_shard_files_are_plain_npy_with_the_documented_dtypes_and_checksums(tmp_path):
    entry = write_shard(tmp_path, 3, _shard_arrays(True, True), {"index": 3})
    shard = tmp_path / "shard-00003"
    assert entry["name"] == "shard-00003" and entry["instances"] == 2 and entry["tokens"] == 17
    for file, digest in entry["sha256"].items():
        assert hashlib.sha256((shard / file).read_bytes()).hexdigest() == digest
        array = np.load(shard / file)
        assert array.dtype == storage.ARRAY_DTYPES[file.removesuffix(".npy")]
    assert np.load(shard / "input_ids.npy").dtype == np.uint16
    assert read_shard_entry(tmp_path, 3) == json.loads((shard / "shard.json").read_text())
    assert not list(tmp_path.glob(".shard-*"))  # the temporary folder was renamed away


def test_damaged_or_missing_shards_are_not_taken_as_finished(tmp_path):
    write_shard(tmp_path, 0, _shard_arrays(True, True), {"index": 0})
    ids = tmp_path / "shard-00000" / "input_ids.npy"
    ids.write_bytes(ids.read_bytes()[:-2] + b"\x00\x00")
    assert read_shard_entry(tmp_path, 0) is None
    assert read_shard_entry(tmp_path, 1) is None


def test_items_rebuild_masked_inputs_labels_and_token_types(tmp_path):
    ds = PreparedDataset(_folder(tmp_path))
    assert len(ds) == 2
    item = ds[0]
    assert item["input_ids"].tolist() == [101, 2769, 4263, 103, 1921, 102, 1921, 2128, 7305, 102]
    assert item["labels"].tolist() == [-100, -100, -100, 1266, 776] + [-100] * 5
    assert item["token_type_ids"].tolist() == [0] * 6 + [1] * 4
    assert item["word_starts"].tolist() == [True, True, True, True, False, True, True, False, False, True]
    assert item["next_sentence_label"] == 0 and ds[1]["next_sentence_label"] == 1
    assert ds[-1]["input_ids"].tolist() == [101, 872, 1962, 102, 1086, 6224, 102]
    assert ds[1]["labels"].tolist() == [-100] * 4 + [1086] + [-100] * 2
    assert item["input_ids"].dtype == np.int64 and item["labels"].dtype == np.int64
    with pytest.raises(IndexError):
        ds[2]


def test_dynamic_folder_without_nsp_has_no_labels(tmp_path):
    ds = PreparedDataset(_folder(tmp_path, static=False, nsp=False))
    item = ds[0]
    assert "labels" not in item and "next_sentence_label" not in item
    assert item["input_ids"].tolist()[:5] == [101, 2769, 4263, 1266, 776]


def test_shard_subsets_and_pickling_for_dataloader_workers(tmp_path):
    folder = _folder(tmp_path, shards=3)
    ds = PreparedDataset(folder)
    assert len(ds) == 6
    part = PreparedDataset(folder, shards=[2])
    assert len(part) == 2 and part[1]["input_ids"].tolist() == ds[5]["input_ids"].tolist()
    ds[0]  # opens memory maps; pickling must still work and reopen them
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[4]["labels"].tolist() == ds[4]["labels"].tolist()
    with pytest.raises(UserError, match="out of range"):
        PreparedDataset(folder, shards=[3])


def test_static_items_through_the_collator_keep_their_masks(tmp_path):
    ds = PreparedDataset(_folder(tmp_path))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=WholeWordMaskCollator(seed=0))
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (2, 10)
    assert batch["input_ids"][0].tolist() == ds[0]["input_ids"].tolist()
    assert batch["labels"][0].tolist() == ds[0]["labels"].tolist()
    assert batch["labels"][1, 7:].tolist() == [-100] * 3  # padding
    assert batch["next_sentence_label"].tolist() == [0, 1]
    assert batch["token_type_ids"][0].tolist() == [0] * 6 + [1] * 4


def test_read_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_manifest(tmp_path / "absent")
    with pytest.raises(UserError, match="no manifest.json") as e:
        read_manifest(tmp_path)
    assert e.value.path == str(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        read_manifest(tmp_path)
    folder = _folder(tmp_path / "ok")
    m = json.loads((folder / "manifest.json").read_text())
    for change, message in (({"format_version": 99}, "format_version"), ({"complete": False}, "has not finished"),
                            ({"masking": "sometimes"}, "masking"), ({"shards": [{"x": 1}]}, "malformed")):
        (folder / "manifest.json").write_text(json.dumps(m | change), encoding="utf-8")
        with pytest.raises(UserError, match=message):
            read_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps(m | {"complete": False}), encoding="utf-8")
    assert read_manifest(folder, require_complete=False)["complete"] is False


def test_dynamic_items_get_whole_word_masks_from_the_collator(tmp_path):
    ds = PreparedDataset(_folder(tmp_path, static=False, nsp=False))
    collate = WholeWordMaskCollator(seed=0)
    seen_partial = False
    for _ in range(50):
        batch = collate([ds[0], ds[1]])
        chosen = batch["labels"][0] != -100
        assert chosen.any()
        # 北京 (positions 3-4) and 天安门 (6-8) are words: masked together or not at all
        for group in ([3, 4], [6, 7, 8]):
            seen_partial |= bool(chosen[group].any() and not chosen[group].all())
        assert batch["labels"][0][chosen].tolist() == [ds[0]["input_ids"][i] for i in np.flatnonzero(chosen)]
    assert not seen_partial
