"""Checkpoint conversion without TensorFlow: TF-1 <-> Hugging Face folders, and HFL's legacy PyTorch files.

    from bertwwm.convert import tf_to_hf, hf_to_tf, convert_legacy_folder
    tf_to_hf("chinese_wwm_L-12_H-768_A-12/", "bert-wwm-hf/")     # folder, prefix or .index file
    hf_to_tf("bert-wwm-hf/", "bert-wwm-tf/")                    # folder or hub id

GELU: Google's TF BERT computes GELU with the tanh approximation, so TF checkpoints convert with
hidden_act "gelu_new" (transformers' tanh GELU); exact-erf "gelu" differs by up to ~1e-3 per activation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from bertwwm.convert.names import ConversionReport, state_dict_to_tf, tf_to_state_dict
from bertwwm.convert.tf_checkpoint import CheckpointReader, write_checkpoint
from bertwwm.errors import UserError

TF_CHECKPOINT_NAME = "bert_model.ckpt"
TANH_GELU = "gelu_new"  # transformers' name for Google's tanh-approximated GELU (works in transformers 2.x - 5.x)

# Google's activation names -> transformers' (Google's "gelu" is the tanh approximation).
_TF_ACT_TO_HF = {"gelu": TANH_GELU, "relu": "relu", "tanh": "tanh", "linear": "linear"}
_HF_ACT_TO_TF = {"gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_python_tanh": "gelu",
                 "relu": "relu", "tanh": "tanh", "linear": "linear"}
_GOOGLE_CONFIG_KEYS = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
                       "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                       "num_hidden_layers", "type_vocab_size", "vocab_size")


def read_tf_bert_config(path: str | Path):
    """Google's bert_config.json as a BertConfig whose activation matches Google's code (tanh GELU)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("bert_config.json not found next to the checkpoint", path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read bert_config.json ({e})", path) from None
    return tf_config_from_dict(raw, path)


def tf_config_from_dict(raw: dict, path: str | Path):
    """A BertConfig from the dict of a Google bert_config.json (`path` only names it in errors)."""
    from transformers import BertConfig

    if not isinstance(raw, dict):
        raise UserError("bert_config.json is not a JSON object", path)
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "vocab_size") if k not in raw]
    if missing:
        raise UserError(f"bert_config.json lacks {', '.join(missing)}", path)
    act = raw.get("hidden_act", "gelu")
    if act not in _TF_ACT_TO_HF:
        raise UserError(f"unknown hidden_act {act!r} (Google's BERT knows {', '.join(_TF_ACT_TO_HF)})", path)
    if raw["hidden_size"] % raw["num_attention_heads"]:
        raise UserError(f"hidden_size {raw['hidden_size']} is not a multiple of num_attention_heads "
                        f"{raw['num_attention_heads']}", path)
    kwargs = {k: raw[k] for k in _GOOGLE_CONFIG_KEYS if k in raw}
    kwargs["hidden_act"] = _TF_ACT_TO_HF[act]
    return BertConfig(**kwargs, layer_norm_eps=1e-12, architectures=["BertForPreTraining"])


def _tf_prefix(ckpt: str | Path) -> Path:
    from bertwwm.zoo import _tf_prefix_of, find_tf_prefix

    path = Path(ckpt).expanduser()
    if path.is_dir():
        prefix = find_tf_prefix(path)
        if prefix is None:
            raise UserError("no TF checkpoint here (expected bert_model.ckpt.index and .data-* files)", path)
        return prefix
    if path.is_file():
        prefix = _tf_prefix_of(path)
        if prefix is None:
            raise UserError("not a TF checkpoint file (expected PREFIX.index or PREFIX.data-*)", path)
        return prefix
    if Path(f"{path}.index").is_file():
        return path
    raise UserError("no such checkpoint (give its folder, its prefix, or its .index file)", path)


def _vocab_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError("vocab.txt not found (the tokenizer needs it)", path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise UserError(f"vocab.txt is not UTF-8 ({e.reason})", path) from None
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def write_tokenizer(folder: Path, vocab_path: Path, vocab_size: int, do_lower_case: bool | None = None) -> str:
    """Tokenizer files for a converted model. Google's Chinese vocab gets the project's checked tokenizer;
    any other vocab (e.g. multilingual) is copied and a BERT tokenizer is built from it."""
    from bertwwm import tokens

    lines = _vocab_lines(vocab_path)
    if len(lines) != vocab_size:
        raise UserError(f"vocab.txt has {len(lines)} entries but the config says vocab_size {vocab_size}", vocab_path)
    if lines == list(tokens.load_vocab()):
        tokens.save_tokenizer(folder)
        return "Google's Chinese BERT vocabulary (21,128 entries)"
    from transformers import BertTokenizer

    vocab = {}
    for i, token in enumerate(lines):
        vocab.setdefault(token, i)
    if do_lower_case is None:
        # Cased vocabularies (e.g. multilingual-cased) keep capitalised words; uncased ones have almost none.
        alpha = [t for t in lines if t.isascii() and t.isalpha()]
        do_lower_case = sum(t != t.lower() for t in alpha) < 0.01 * max(1, len(alpha))
    tok = BertTokenizer(vocab=vocab, do_lower_case=do_lower_case, tokenize_chinese_chars=True, strip_accents=None)
    if len(tok) != len(vocab):
        raise RuntimeError(f"tokenizer came out with {len(tok)} entries for a {len(vocab)}-entry vocabulary")
    tok.save_pretrained(str(folder))
    shutil.copyfile(vocab_path, folder / "vocab.txt")
    return f"the checkpoint's own vocabulary ({len(lines)} entries, lower-casing {'on' if do_lower_case else 'off'})"


def write_hf_folder(folder: Path, config, state: dict[str, np.ndarray]) -> None:
    """config.json + model.safetensors in the layout `save_pretrained` writes (tied decoder weights left
    out: transformers ties them again on load)."""
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    has_heads = any(k.startswith("cls.") for k in tensors)
    config.architectures = ["BertForPreTraining"] if has_heads else ["BertModel"]
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _readme(title: str, source: Path, config, report: ConversionReport, tokenizer: str, act_note: str) -> str:
    return (
        f"# {title}\n\nConverted by `bertwwm convert` from `{source}`.\n\n"
        f"- Architecture: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads, vocab {config.vocab_size}.\n"
        f"- Activation: `hidden_act = \"{config.hidden_act}\"`. {act_note}\n"
        f"- Tokenizer: {tokenizer}.\n\n## Conversion report\n\n```\n{report.summary()}\n```\n\n"
        "Load it with `transformers.AutoModel.from_pretrained(folder)` (or `AutoModelForPreTraining`) and "
        "`AutoTokenizer.from_pretrained(folder)`.\n"
    )


def tf_to_hf(ckpt: str | Path, out_dir: str | Path, *, do_lower_case: bool | None = None) -> ConversionReport:
    """Convert a TF-1 BERT checkpoint (folder, prefix or .index file, with bert_config.json and vocab.txt
    beside it) into a Hugging Face folder. Nothing is left at `out_dir` if anything fails."""
    from bertwwm.fileio import atomic_path

    prefix = _tf_prefix(ckpt)
    config = read_tf_bert_config(prefix.parent / "bert_config.json")
    vocab_path = prefix.parent / "vocab.txt"
    _vocab_lines(vocab_path)  # fail before the slow part
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
            _readme(f"BERT converted from TensorFlow checkpoint {prefix.name}", prefix, config, report, tokenizer,
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


def _local_model_folder(model: str | Path) -> Path:
    from bertwwm.zoo import resolve_model

    resolved = resolve_model(str(model))
    if Path(resolved).is_dir():
        return Path(resolved)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(resolved, allow_patterns=[
            "config.json", "vocab.txt", "tokenizer*", "special_tokens_map.json", "*.safetensors",
            "model.safetensors.index.json"]))
    except Exception as e:  # offline, unknown repo, ...: all mean "cannot get it"
        raise UserError(f"cannot download the model ({str(e).splitlines()[0]})", resolved) from None


def hf_to_tf(model: str | Path, out_dir: str | Path) -> ConversionReport:
    """Write a Hugging Face BERT (folder, hub id or zoo name) as a TF-1 checkpoint with Google's variable
    names: bert_model.ckpt.index/.data-00000-of-00001, checkpoint, bert_config.json, vocab.txt."""
    from bertwwm.fileio import atomic_path
    from bertwwm.zoo import load_bert_config

    folder = _local_model_folder(model)
    config = load_bert_config(str(folder))
    act = config.hidden_act
    if act not in _HF_ACT_TO_TF:
        raise UserError(f"hidden_act {act!r} has no counterpart in Google's BERT", folder / "config.json")
    vocab = folder / "vocab.txt"
    if vocab.is_file():
        lines = _vocab_lines(vocab)
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
    google = {k: getattr(config, k) for k in _GOOGLE_CONFIG_KEYS}
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


from bertwwm.convert.legacy import convert_legacy_folder, rename_legacy_state_dict  # noqa: E402

__all__ = ["tf_to_hf", "hf_to_tf", "convert_legacy_folder", "rename_legacy_state_dict", "read_tf_bert_config",
           "tf_config_from_dict",
           "CheckpointReader", "write_checkpoint", "ConversionReport"]
