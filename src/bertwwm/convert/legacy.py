"""HFL's legacy PyTorch files: `pytorch_model.bin` written by pytorch-pretrained-BERT / PyTorch-Transformers 1.0.

Those files name LayerNorm parameters `gamma`/`beta`, may lack the `bert.` prefix (saved from BertModel),
carry a `module.` prefix (saved from DataParallel) or a `roberta.` prefix (loaded into the wrong class),
and come with `bert_config.json` instead of config.json. This module renames them onto current
transformers names, checks every shape, and reports what was renamed or ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bertwwm.convert.names import HF_DERIVED, ConversionReport, expected_shapes
from bertwwm.core.errors import UserError

_BERT_PARTS = ("embeddings.", "encoder.", "pooler.")


def read_state_dict(path: str | Path) -> dict:
    """A pytorch_model.bin's tensors (never unpickles arbitrary objects: weights only)."""
    import torch

    from bertwwm.core.integrity import load_torch_file

    path = Path(path)
    if not path.is_file():
        raise UserError("weights file not found", path)
    state = load_torch_file(path, "PyTorch weights", mmap=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError("not a state dict of tensors", path)
    return state


def read_state_dict_keys(path: str | Path) -> list[str]:
    return list(read_state_dict(path))


def legacy_name(name: str) -> str:
    """The current transformers name for one legacy parameter name."""
    for prefix in ("module.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.startswith("roberta."):
        name = "bert." + name[len("roberta."):]
    if name.startswith(_BERT_PARTS):
        name = "bert." + name
    if name.endswith(".gamma"):
        name = name[:-len(".gamma")] + ".weight"
    elif name.endswith(".beta"):
        name = name[:-len(".beta")] + ".bias"
    return name


def needs_renaming(keys: list[str]) -> bool:
    return any(legacy_name(k) != k for k in keys if not k.startswith(_BERT_PARTS)) or \
        any(k.endswith((".gamma", ".beta")) for k in keys)


def rename_legacy_state_dict(state: dict, config) -> tuple[dict[str, np.ndarray], ConversionReport]:
    """Rename a legacy state dict onto BertForPreTraining names and check shapes against `config`.

    Returns float32 numpy arrays and a report of what was renamed or ignored. Ties/buffers
    (decoder weight, position_ids) are dropped since transformers rebuilds them; task heads that are not
    part of BertForPreTraining (e.g. `classifier.*`) are ignored and reported.
    """
    import torch

    report = ConversionReport()
    shapes = expected_shapes(config)
    out: dict[str, np.ndarray] = {}
    for old, tensor in state.items():
        new = legacy_name(old)
        if new in HF_DERIVED:
            continue
        if new not in shapes:
            report.ignored.append(old)
            continue
        if new in out:
            raise UserError(f"two parameters map onto {new} (one is {old})")
        if tuple(tensor.shape) != shapes[new]:
            raise UserError(f"parameter {old} has shape {tuple(tensor.shape)}, but the config implies "
                            f"{shapes[new]}: the config does not match the weights")
        if new != old:
            report.renamed[old] = new
        out[new] = tensor.detach().to(torch.float32).numpy()
        report.converted += 1
    report.missing = [n for n in shapes if n not in out]
    encoder_missing = [n for n in report.missing if n.startswith("bert.") and not n.startswith("bert.pooler.")]
    if encoder_missing:
        raise UserError(f"weights lack {len(encoder_missing)} BERT parameters, e.g. {', '.join(encoder_missing[:4])}")
    heads = [n for n in report.missing if n.startswith("cls.")]
    if heads and len(heads) != len([n for n in shapes if n.startswith("cls.")]):
        raise UserError(f"weights have only part of the pretraining heads; missing {', '.join(heads)}")
    return out, report


def read_legacy_config(folder: Path):
    from bertwwm.convert.configs import config_from_dict

    for name in ("config.json", "bert_config.json"):
        path = folder / name
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read the config ({e})", path) from None
            if raw.get("model_type") is None:
                raw["model_type"] = "bert"  # bert_config.json and PyTorch-Transformers 1.0 configs have none
            return config_from_dict(raw, path)
    raise UserError("no config.json or bert_config.json next to the weights", folder)


def convert_legacy_folder(folder: str | Path, out_dir: str | Path) -> ConversionReport:
    """Turn a legacy folder (pytorch_model.bin + bert_config.json/config.json + vocab.txt) into a current
    Hugging Face folder at `out_dir`, written atomically."""
    from bertwwm.convert.hf_folder import readme, write_hf_folder, write_tokenizer
    from bertwwm.core.fileio import atomic_path

    folder = Path(folder)
    weights = folder / "pytorch_model.bin" if folder.is_dir() else folder
    folder = weights.parent
    config = read_legacy_config(folder)
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise UserError("vocab.txt not found next to the weights", vocab)
    if (folder / "model.safetensors").is_file() and not (folder / "pytorch_model.bin").is_file():
        from bertwwm.core.integrity import load_safetensors

        state = load_safetensors(folder / "model.safetensors")
    else:
        state = read_state_dict(weights)
    arrays, report = rename_legacy_state_dict(state, config)
    if "bert.pooler.dense.weight" not in arrays:
        raise UserError("weights lack the pooler (bert.pooler.dense.*)", weights)
    if not any(k.startswith("cls.") for k in arrays):
        arrays = {k[len("bert."):]: v for k, v in arrays.items()}  # a BertModel folder keeps BertModel names
    with atomic_path(out_dir) as tmp:
        write_hf_folder(tmp, config, arrays)
        tokenizer = write_tokenizer(tmp, vocab, config.vocab_size)
        note = ("Kept from the original config. HFL's PyTorch files were converted with exact-erf `gelu`; "
                "the TensorFlow originals compute tanh GELU (`gelu_new`), a difference of ~1e-3 per activation.")
        (tmp / "README.md").write_text(
            readme("BERT converted from a legacy PyTorch checkpoint", weights, config, report, tokenizer, note),
            encoding="utf-8")
    return report
