"""Config reading: Google's bert_config.json and config.json files (RoBERTa-wwm's read as BERT) as a
transformers BertConfig. A leaf module (only bertwwm.core.errors) so that both the converters and the zoo can use
it: the zoo imports `bertwwm.convert`, never the reverse."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bertwwm.core.errors import UserError

logger = logging.getLogger(__name__)

TANH_GELU = "gelu_new"  # transformers' name for Google's tanh-approximated GELU (works in transformers 2.x - 5.x)

# Google's activation names -> transformers' (Google's "gelu" is the tanh approximation).
TF_ACT_TO_HF = {"gelu": TANH_GELU, "relu": "relu", "tanh": "tanh", "linear": "linear"}
GOOGLE_CONFIG_KEYS = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
                      "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                      "num_hidden_layers", "type_vocab_size", "vocab_size")


def read_json(path: Path, what: str = "JSON") -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {what} ({e})", path) from None


def read_tf_bert_config(path: str | Path):
    """Google's bert_config.json as a BertConfig whose activation matches Google's code (tanh GELU)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("bert_config.json not found next to the checkpoint", path)
    return tf_config_from_dict(read_json(path, "bert_config.json"), path)


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
    if act not in TF_ACT_TO_HF:
        raise UserError(f"unknown hidden_act {act!r} (Google's BERT knows {', '.join(TF_ACT_TO_HF)})", path)
    if raw["hidden_size"] % raw["num_attention_heads"]:
        raise UserError(f"hidden_size {raw['hidden_size']} is not a multiple of num_attention_heads "
                        f"{raw['num_attention_heads']}", path)
    kwargs = {k: raw[k] for k in GOOGLE_CONFIG_KEYS if k in raw}
    kwargs["hidden_act"] = TF_ACT_TO_HF[act]
    return BertConfig(**kwargs, layer_norm_eps=1e-12, architectures=["BertForPreTraining"])


def config_from_dict(config: dict, where: str | Path):
    """A BertConfig from a config.json / bert_config.json dict, reading RoBERTa-wwm's as BERT."""
    from transformers import BertConfig

    config = dict(config)
    model_type = config.get("model_type", "bert")
    if model_type == "roberta":
        logger.warning(
            "%s says model_type 'roberta', but the Chinese RoBERTa-wwm models are BERT models (BERT's "
            "architecture, WordPiece vocab and position ids from 0; only the training recipe follows RoBERTa). "
            "Reading it as BERT: loading it with Roberta* classes silently breaks it.", where)
        config["model_type"] = "bert"
        config.pop("architectures", None)
    elif model_type != "bert":
        raise UserError(f"not a BERT model (model_type {model_type!r})", where)
    for key in ("bos_token_id", "eos_token_id"):  # RoBERTa's values make no sense for BERT's vocab
        if model_type == "roberta":
            config.pop(key, None)
    if model_type == "roberta" and config.get("pad_token_id") == 1:
        config["pad_token_id"] = 0
    return BertConfig.from_dict(config)


def config_needs_fixing(config_path: Path) -> bool:
    """A config.json that transformers would misread: RoBERTa-wwm's model_type "roberta", or none at all."""
    return read_json(config_path, "config").get("model_type") in ("roberta", None)
