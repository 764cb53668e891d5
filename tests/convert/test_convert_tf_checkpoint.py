"""The pure-Python TF-1 checkpoint reader and writer, checked against a checkpoint TensorFlow wrote."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from crc32c import crc32c

from bertwwm.convert import tf_checkpoint as tfc
from bertwwm.convert.tf_checkpoint import CheckpointReader, read_table, write_checkpoint, write_table
from bertwwm.core.errors import UserError


def test_reads_every_variable_with_the_shape_bert_config_implies(tiny_tf):
    config = json.loads((tiny_tf / "bert_config.json").read_text())
    reader = CheckpointReader(tiny_tf / "bert_model.ckpt")
    h, v = config["hidden_size"], config["vocab_size"]
    assert reader.num_shards == 1
    assert len(reader.entries) == 5 + 16 * config["num_hidden_layers"] + 2 + 5 + 2
    assert reader.entries["bert/embeddings/word_embeddings"].shape == (v, h)
    assert reader.entries["bert/encoder/layer_1/intermediate/dense/kernel"].shape == (h, config["intermediate_size"])
    assert reader.entries["cls/seq_relationship/output_weights"].shape == (2, h)
    gamma = reader.read("bert/embeddings/LayerNorm/gamma")
    assert gamma.dtype == np.float32 and gamma.shape == (h,)
    # The data file is the tensors back to back; the index's offsets must tile it exactly.
    entries = sorted(reader.entries.values(), key=lambda e: e.offset)
    assert entries[0].offset == 0
    assert all(a.offset + a.size == b.offset for a, b in zip(entries, entries[1:]))
    assert entries[-1].offset + entries[-1].size == (tiny_tf / "bert_model.ckpt.data-00000-of-00001").stat().st_size


def test_writer_reproduces_tensorflows_files_byte_for_byte(tiny_tf, tmp_path):
    tensors = CheckpointReader(tiny_tf / "bert_model.ckpt").read_all()
    write_checkpoint(tmp_path / "bert_model.ckpt", tensors)
    for name in ("bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001"):
        assert (tmp_path / name).read_bytes() == (tiny_tf / name).read_bytes(), name


def test_round_trip_of_every_supported_dtype_and_a_scalar(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "global_step": np.array(12345, dtype=np.int64),
        "a/f32": rng.standard_normal((3, 4)).astype(np.float32),
        "a/f64": rng.standard_normal(5),
        "a/f16": rng.standard_normal(7).astype(np.float16),
        "b/i32": np.arange(-5, 5, dtype=np.int32),
        "b/u8": np.arange(9, dtype=np.uint8).reshape(3, 3),
        "c/bool": np.array([True, False, True]),
        "c/empty": np.zeros((0, 4), dtype=np.float32),
    }
    write_checkpoint(tmp_path / "m.ckpt", tensors)
    back = CheckpointReader(tmp_path / "m.ckpt").read_all()
    assert sorted(back) == sorted(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert np.array_equal(back[name], array), name


def test_multi_block_tables_with_prefix_compression_round_trip(tmp_path):
    items = [(b"", b"header")] + sorted((f"bert/encoder/layer_{i // 16}/w{i:03d}".encode(), bytes([i % 256]) * 37)
                                         for i in range(400))
    write_table(tmp_path / "t.index", items, block_size=512)
    assert read_table(tmp_path / "t.index") == items
    assert (tmp_path / "t.index").stat().st_size < sum(len(k) + len(v) for k, v in items)  # keys compressed


def test_reads_a_checkpoint_split_over_two_data_shards(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(4, dtype=np.int64)
    prefix = tmp_path / "two.ckpt"
    raws = [a.tobytes(), b.tobytes()]
    for shard, raw in enumerate(raws):
        tfc.data_file(prefix, shard, 2).write_bytes(raw)
    header = tfc._field_varint(1, 2) + tfc._field_bytes(3, tfc._field_varint(1, 1))
    items = [(b"", header),
             (b"a", tfc._encode_entry(1, (2, 3), 0, len(raws[0]), tfc.mask_crc(crc32c(raws[0])), shard_id=0)),
             (b"b", tfc._encode_entry(9, (4,), 0, len(raws[1]), tfc.mask_crc(crc32c(raws[1])), shard_id=1))]
    write_table(f"{prefix}.index", items)
    reader = CheckpointReader(prefix)
    assert reader.num_shards == 2
    assert np.array_equal(reader.read("a"), a) and np.array_equal(reader.read("b"), b)
    tfc.data_file(prefix, 1, 2).unlink()
    with pytest.raises(UserError, match="shard 2 of 2 not found"):
        CheckpointReader(prefix)


def test_crc_masking_and_varints():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    for crc in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert tfc.unmask_crc(tfc.mask_crc(crc)) == crc
    assert tfc.mask_crc(0) != 0
    for value in (0, 1, 127, 128, 300, 2**35, 2**63 - 1):
        assert tfc._read_varint(tfc._varint(value), 0) == (value, len(tfc._varint(value)))
    assert tfc._int64(tfc._read_varint(tfc._varint(-1), 0)[0]) == -1


# --- corrupt files: each gets an error naming the file and the problem ---------------------------


def test_truncated_index_is_reported(tiny_copy):
    index = tiny_copy / "bert_model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-20])
    with pytest.raises(UserError, match="not a TensorFlow checkpoint index, or truncated") as e:
        CheckpointReader(tiny_copy / "bert_model.ckpt")
    assert e.value.path == str(index)
    index.write_bytes(b"\0" * 10)
    with pytest.raises(UserError, match="truncated"):
        CheckpointReader(tiny_copy / "bert_model.ckpt")


@pytest.mark.parametrize("where", [5, 700, 1800])
def test_flipped_index_byte_fails_the_block_checksum(tiny_copy, where):
    index = tiny_copy / "bert_model.ckpt.index"
    data = bytearray(index.read_bytes())
    data[where] ^= 0x01
    index.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum mismatch in the block at byte 0"):
        CheckpointReader(tiny_copy / "bert_model.ckpt")


def test_truncated_data_file_is_reported(tiny_copy):
    data = tiny_copy / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated checkpoint data file") as e:
        CheckpointReader(tiny_copy / "bert_model.ckpt")
    assert e.value.path == str(data)


def test_flipped_data_byte_fails_the_tensor_checksum(tiny_copy):
    data = tiny_copy / "bert_model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0x80
    data.write_bytes(bytes(raw))
    reader = CheckpointReader(tiny_copy / "bert_model.ckpt")  # the index itself is fine
    reader.read("bert/embeddings/LayerNorm/beta")  # bytes 0-255: untouched
    with pytest.raises(UserError, match="checksum mismatch for tensor 'bert/embeddings/position_embeddings'"):
        reader.read("bert/embeddings/position_embeddings")


def test_missing_index_is_reported(tmp_path):
    with pytest.raises(UserError, match="checkpoint index not found"):
        CheckpointReader(tmp_path / "nothing.ckpt")
