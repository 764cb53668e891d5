"""Checkpoint conversion without TensorFlow: TF-1 <-> Hugging Face folders, and HFL's legacy PyTorch files.

    from bertwwm.convert import tf_to_hf, hf_to_tf, convert_legacy_folder
    tf_to_hf("chinese_wwm_L-12_H-768_A-12/", "bert-wwm-hf/")     # folder, prefix or .index file
    hf_to_tf("bert-wwm-hf/", "bert-wwm-tf/")                    # a local HF folder
    hf_to_tf(bertwwm.modeling.zoo.resolve_model("bert-wwm"), "bert-wwm-tf/")  # a zoo name or hub id, resolved first

GELU: Google's TF BERT computes GELU with the tanh approximation, so TF checkpoints convert with
hidden_act "gelu_new" (transformers' tanh GELU); exact-erf "gelu" differs by up to ~1e-3 per activation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# The leaves (configs, formats, hf_folder, names, tf_checkpoint) import nothing above them, and nothing in
# bertwwm.convert imports bertwwm.modeling.zoo: the zoo imports the converters, never the reverse.
from bertwwm.convert.configs import (GOOGLE_CONFIG_KEYS, TANH_GELU, config_from_dict, read_json, read_tf_bert_config,
                                     tf_config_from_dict)
from bertwwm.convert.formats import find_tf_prefix, tf_prefix_of
from bertwwm.convert.hf_folder import readme, vocab_lines, write_hf_folder, write_tokenizer
from bertwwm.convert.legacy import convert_legacy_folder, rename_legacy_state_dict
from bertwwm.convert.names import ConversionReport, state_dict_to_tf, tf_to_state_dict
from bertwwm.convert.tf_checkpoint import CheckpointReader, write_checkpoint
from bertwwm.core.errors import UserError

TF_CHECKPOINT_NAME = "bert_model.ckpt"

# transformers' activation names -> Google's (Google's "gelu" is the tanh approximation).
_HF_ACT_TO_TF = {"gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_python_tanh": "gelu",
                 "relu": "relu", "tanh": "tanh", "linear": "linear"}


def _tf_prefix(ckpt: str | Path) -> Path:
    path = Path(ckpt).expanduser()
    if path.is_dir():
        prefix = find_tf_prefix(path)
        if prefix is None:
            raise UserError("no TF checkpoint here (expected bert_model.ckpt.index and .data-* files)", path)
        return prefix
    if path.is_file():
        prefix = tf_prefix_of(path)
        if prefix is None:
            raise UserError("not a TF checkpoint file (expected PREFIX.index or PREFIX.data-*)", path)
        return prefix
    if Path(f"{path}.index").is_file():
        return path
    raise UserError("no such checkpoint (give its folder, its prefix, or its .index file)", path)


def tf_to_hf(ckpt: str | Path, out_dir: str | Path, *, do_lower_case: bool | None = None) -> ConversionReport:
    """Convert a TF-1 BERT checkpoint (folder, prefix or .index file, with bert_config.json and vocab.txt
    beside it) into a Hugging Face folder. Nothing is left at `out_dir` if anything fails."""
    from bertwwm.core.fileio import atomic_path

    prefix = _tf_prefix(ckpt)
    config = read_tf_bert_config(prefix.parent / "bert_config.json")
    vocab_path = prefix.parent / "vocab.txt"
    vocab_lines(vocab_path)  # fail before the slow part
    reader = CheckpointReader(prefix)
    from bertwwm.convert.names import is_training_state

    wanted = [n for n in reader.names() if not is_training_state(n)]  # optimiser slots are 2/3 of the file
    tensors = reader.read_all(wanted)
    state, report = tf_to_state_dict(tensors, config, where=f"{prefix}.index")
    if not any(k.startswith("cls.") for k in state):  # no pretraining heads: a BertModel folder
        state = {k.removeprefix("bert."): v for k, v in state.items()}
    report.skipped_training_state = [n for n in reader.names() if is_training_state(n)]
    if config.hidden_act == TANH_GELU:
        report.notes.append(f"hidden_act: Google's \"gelu\" is the tanh approximation, written as \"{TANH_GELU}\"")
    with atomic_path(out_dir) as tmp:
        write_hf_folder(tmp, config, state)
        tokenizer = write_tokenizer(tmp, vocab_path, config.vocab_size, do_lower_case)
        note = ("Google's TensorFlow BERT computes GELU with the tanh approximation; `gelu_new` is that same "
                "function in transformers, so this model reproduces the TensorFlow outputs (exact-erf `gelu` "
                "would differ by up to ~1e-3 per activation).")
        (tmp / "README.md").write_text(
            readme(f"BERT converted from TensorFlow checkpoint {prefix.name}", prefix, config, report, tokenizer,
                    note), encoding="utf-8")
    return report


def _read_hf_state(folder: Path) -> dict[str, np.ndarray]:
    import torch

    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file() or index.is_file():
        from safetensors.torch import load_file

        files = [folder / "model.safetensors"] if not index.is_file() else sorted(
            {folder / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
        state = {}
        for f in files:
            try:
                state.update(load_file(str(f)))
            except Exception as e:  # safetensors raises its own error types for damaged files
                raise UserError(f"cannot read weights ({e})", f) from None
    elif (folder / "pytorch_model.bin").is_file():
        from bertwwm.convert.legacy import read_state_dict

        state = read_state_dict(folder / "pytorch_model.bin")
    else:
        raise UserError("no model.safetensors or pytorch_model.bin in the model folder", folder)
    return {k: v.detach().to(torch.float32).numpy() for k, v in state.items() if v.is_floating_point()}


def _hf_model_folder(model: str | Path) -> tuple[Path, object]:
    """(folder, BertConfig) of a local Hugging Face folder. Zoo names, hub ids and other checkpoint formats
    are the zoo's business (`bertwwm.modeling.zoo.resolve_model`); the converters never import the zoo."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise UserError("not a local model folder (for a zoo name, hub id or TF/legacy checkpoint, pass "
                        "bertwwm.modeling.zoo.resolve_model(ref) here, as `bertwwm convert hf-to-tf` does)", folder)
    if not (folder / "config.json").is_file():
        raise UserError("no model found: the folder has no config.json", folder)
    return folder, config_from_dict(read_json(folder / "config.json", "config"), folder / "config.json")


def hf_to_tf(model: str | Path, out_dir: str | Path) -> ConversionReport:
    """Write a Hugging Face BERT folder as a TF-1 checkpoint with Google's variable names:
    bert_model.ckpt.index/.data-00000-of-00001, checkpoint, bert_config.json, vocab.txt."""
    from bertwwm.core.fileio import atomic_path

    folder, config = _hf_model_folder(model)
    act = config.hidden_act
    if act not in _HF_ACT_TO_TF:
        raise UserError(f"hidden_act {act!r} has no counterpart in Google's BERT", folder / "config.json")
    vocab = folder / "vocab.txt"
    if vocab.is_file():
        lines = vocab_lines(vocab)
    else:
        try:
            from transformers import AutoTokenizer

            by_id = AutoTokenizer.from_pretrained(str(folder)).get_vocab()
        except Exception:
            raise UserError("vocab.txt not found and no tokenizer to take the vocabulary from", vocab) from None
        lines = [t for t, _ in sorted(by_id.items(), key=lambda kv: kv[1])]
    if len(lines) != config.vocab_size:
        raise UserError(f"vocabulary has {len(lines)} entries but the config says vocab_size {config.vocab_size}",
                        vocab)
    tensors, report = state_dict_to_tf(_read_hf_state(folder), config)
    google = {k: getattr(config, k) for k in GOOGLE_CONFIG_KEYS}
    google["hidden_act"] = _HF_ACT_TO_TF[act]
    if act == "gelu":
        report.notes.append("hidden_act: the model uses exact-erf \"gelu\"; Google's code will compute its tanh "
                            "approximation (outputs differ by ~1e-3 per activation)")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_checkpoint(tmp / TF_CHECKPOINT_NAME, tensors)
        (tmp / "checkpoint").write_text(
            f'model_checkpoint_path: "{TF_CHECKPOINT_NAME}"\nall_model_checkpoint_paths: "{TF_CHECKPOINT_NAME}"\n',
            encoding="utf-8")
        (tmp / "bert_config.json").write_text(json.dumps(google, indent=2) + "\n", encoding="utf-8")
        (tmp / "vocab.txt").write_text("".join(t + "\n" for t in lines), encoding="utf-8")
        note = ("" if act != "gelu" else
                " The source used exact-erf GELU; Google's code computes the tanh approximation (outputs "
                "differ by ~1e-3 per activation).")
        (tmp / "README.md").write_text(
            f"# TensorFlow-1 checkpoint of {folder}\n\nWritten by `bertwwm convert hf-to-tf` with Google's "
            f"variable names; load it with Google's `modeling.py` (init_checkpoint=bert_model.ckpt).{note}\n\n"
            f"```\n{report.summary()}\n```\n", encoding="utf-8")
    return report


__all__ = ["tf_to_hf", "hf_to_tf", "convert_legacy_folder", "rename_legacy_state_dict", "read_tf_bert_config",
           "tf_config_from_dict", "config_from_dict",
           "CheckpointReader", "write_checkpoint", "ConversionReport"]
