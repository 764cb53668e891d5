"""Verb `bertwwm convert`: tf-to-hf, hf-to-tf, legacy-bin."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertwwm.core.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    p = sub.add_parser("tf-to-hf", help="TF-1 checkpoint (Google's / HFL's zip contents) -> Hugging Face folder",
                       description="Convert a TF-1 BERT checkpoint without TensorFlow. CKPT is the unpacked "
                       "folder, the checkpoint prefix (.../bert_model.ckpt) or the released .zip; "
                       "bert_config.json and vocab.txt must sit beside the checkpoint.")
    p.add_argument("ckpt", metavar="CKPT")
    p.add_argument("out_dir", metavar="OUT_DIR")
    case = p.add_mutually_exclusive_group()
    case.add_argument("--lower-case", dest="do_lower_case", action="store_true", default=None,
                      help="force lower-casing in the tokenizer (default: guessed from the vocabulary; "
                      "Google's Chinese vocabulary always lower-cases)")
    case.add_argument("--cased", dest="do_lower_case", action="store_false", help="keep case (cased vocabularies)")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")

    p = sub.add_parser("hf-to-tf", help="Hugging Face BERT (folder, hub id or zoo name) -> TF-1 checkpoint",
                       description="Write a TF-1 checkpoint with Google's variable names that Google's BERT "
                       "code (and TensorFlow) reads: bert_model.ckpt.*, bert_config.json, vocab.txt.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")

    p = sub.add_parser("legacy-bin", help="HFL's old pytorch_model.bin folder -> current Hugging Face folder",
                       description="Rename legacy parameter names (LayerNorm gamma/beta, missing bert. prefix, "
                       "module./roberta. prefixes) onto current transformers names and report each change.")
    p.add_argument("folder", metavar="FOLDER", help="folder (or .zip) with pytorch_model.bin, "
                   "bert_config.json/config.json and vocab.txt")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def _check_out(out_dir: str, force: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not force:
        raise UserError("output folder exists; pass --force to replace it", out)
    if out.exists() and not out.is_dir():
        raise UserError("output path exists and is not a folder", out)
    return out


def _unzip(path: str) -> str:
    """Zips are unpacked into the cache first (the same place resolve_model would put them)."""
    from bertwwm.modeling.resolve import _extract_zip, _is_zip, _single_model_folder, default_cache_dir

    if _is_zip(Path(path)):
        return str(_single_model_folder(_extract_zip(Path(path), default_cache_dir())))
    return path


def run(args: argparse.Namespace) -> int:
    out = _check_out(args.out_dir, args.force)
    if args.direction == "tf-to-hf":
        from bertwwm.convert import tf_to_hf

        report = tf_to_hf(_unzip(args.ckpt), out, do_lower_case=args.do_lower_case)
    elif args.direction == "hf-to-tf":
        from bertwwm.convert import hf_to_tf

        from bertwwm.modeling.zoo import resolve_model

        report = hf_to_tf(resolve_model(args.model), out)  # a zoo name or hub id: downloaded; TF/legacy: converted
    else:
        from bertwwm.convert.legacy import convert_legacy_folder

        report = convert_legacy_folder(_unzip(args.folder), out)
    print(report.summary())
    print(f"wrote {out}")
    _check_head(out if args.direction != "hf-to-tf" else args.model)
    return 0


def _check_head(ref: str | Path) -> None:
    """One warning line when the converted model's MLM head is missing or untrained (see bertwwm.modeling.head_check)."""
    from transformers import AutoModelForMaskedLM

    from bertwwm.modeling import zoo
    from bertwwm.modeling.head_check import check_mlm_head, quiet_transformers

    path = zoo.resolve_model(str(ref))
    with quiet_transformers():
        model = AutoModelForMaskedLM.from_pretrained(path, config=zoo.load_bert_config(path))
    check_mlm_head(model, path, "convert")
