"""The model zoo's table: the report's released models, with the facts the report and its README give.

`zoo_model` finds an entry by our short name, its hub id (with or without the owner) or an older spelling.
Resolving any model reference to a loadable folder is `bertwwm.modeling.resolve`'s job; `bertwwm.modeling.zoo`
offers both, and the `bertwwm models` verb.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooModel:
    """One released model, with the facts the report and its README give about it."""

    name: str  # our short name, accepted by every --model / --init
    title: str  # as the report writes it
    hub_id: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    corpus: str
    training_tokens: str
    steps: str
    batch_size: str
    optimizer: str
    masking: str
    init: str
    obtain: str  # how to get the original files besides the hub

    @property
    def parameters(self) -> int:
        """Parameters of the encoder (embeddings + layers + pooler), computed from the architecture."""
        return bert_parameter_count(self.vocab_size, self.hidden, self.layers, self.intermediate)

    def bert_config(self):
        """The released bert_config.json as a transformers BertConfig (no download needed)."""
        from transformers import BertConfig

        return BertConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden, num_hidden_layers=self.layers,
            num_attention_heads=self.heads, intermediate_size=self.intermediate, hidden_act="gelu",
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
            type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
            architectures=["BertForMaskedLM"],
        )


def bert_parameter_count(vocab: int, hidden: int, layers: int, intermediate: int,
                         max_positions: int = 512, type_vocab: int = 2) -> int:
    embeddings = (vocab + max_positions + type_vocab) * hidden + 2 * hidden
    attention = 4 * (hidden * hidden + hidden) + 2 * hidden
    feed_forward = hidden * intermediate + intermediate + intermediate * hidden + hidden + 2 * hidden
    pooler = hidden * hidden + hidden
    return embeddings + layers * (attention + feed_forward) + pooler


_HFL_LINKS = ("the report's README (github.com/ymcui/Chinese-BERT-wwm, section 模型下载/Download) links a "
              "TensorFlow zip (Google Drive, or iFLYTEK Cloud with the password given there)")
_WIKI_EXT = "Chinese Wikipedia + extended data (encyclopedia, news, question answering), 5.4B words"

ZOO: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel(
        "bert-wwm", "BERT-wwm, Chinese", "hfl/chinese-bert-wwm", 12, 768, 12, 3072, 21128,
        "Chinese Wikipedia (0.4B words)", "0.4B", "100K (seq 128) + 100K (seq 512)", "2,560 / 384", "LAMB",
        "whole word (LTP segmentation)", "Google's BERT-base Chinese",
        _HFL_LINKS + " and a PyTorch zip (legacy pytorch_model.bin); zip: chinese_wwm_L-12_H-768_A-12.zip"),
    ZooModel(
        "bert-wwm-ext", "BERT-wwm-ext, Chinese", "hfl/chinese-bert-wwm-ext", 12, 768, 12, 3072, 21128,
        _WIKI_EXT, "5.4B", "1M (seq 128) + 400K (seq 512)", "2,560 / 384", "LAMB",
        "whole word (LTP segmentation)", "Google's BERT-base Chinese",
        _HFL_LINKS + " and a PyTorch zip (legacy pytorch_model.bin); zip: chinese_wwm_ext_L-12_H-768_A-12.zip"),
    ZooModel(
        "roberta-wwm-ext", "RoBERTa-wwm-ext, Chinese", "hfl/chinese-roberta-wwm-ext", 12, 768, 12, 3072, 21128,
        _WIKI_EXT, "5.4B", "1M (seq 512)", "384", "AdamW",
        "whole word (LTP segmentation), static masks, no NSP loss", "Google's BERT-base Chinese",
        _HFL_LINKS + "; it is a BERT model: load it with Bert* classes, not Roberta*; "
        "zip: chinese_roberta_wwm_ext_L-12_H-768_A-12.zip"),
    ZooModel(
        "roberta-wwm-ext-large", "RoBERTa-wwm-ext-large, Chinese", "hfl/chinese-roberta-wwm-ext-large",
        24, 1024, 16, 4096, 21128,
        _WIKI_EXT, "5.4B", "2M (seq 512)", "512", "AdamW",
        "whole word (LTP segmentation), static masks, no NSP loss", "random initialisation",
        _HFL_LINKS + " and a PyTorch zip; it is a BERT model: load it with Bert* classes, not Roberta*; "
        "zip: chinese_roberta_wwm_large_ext_L-24_H-1024_A-16.zip"),
    ZooModel(
        "bert-base-chinese", "BERT-base, Chinese (Google)", "google-bert/bert-base-chinese",
        12, 768, 12, 3072, 21128,
        "Chinese Wikipedia (0.4B words)", "0.4B", "not published", "not published", "AdamW",
        "WordPiece (one Chinese character at a time)", "random initialisation",
        "Google's zip chinese_L-12_H-768_A-12.zip (storage.googleapis.com/bert_models/2018_11_03/)"),
    ZooModel(
        "bert-base-multilingual-cased", "BERT-base, Multilingual Cased (Google)",
        "google-bert/bert-base-multilingual-cased", 12, 768, 12, 3072, 119547,
        "Wikipedia in 104 languages", "not published", "not published", "not published", "AdamW",
        "WordPiece (one Chinese character at a time)", "random initialisation",
        "Google's zip multi_cased_L-12_H-768_A-12.zip (storage.googleapis.com/bert_models/2018_11_23/); "
        "its vocabulary is not the 21,128-entry Chinese one"),
]}

# Other spellings users type: the hub ids, the hub names without owner, the report's titles.
_ALIASES: dict[str, str] = {}
for _m in ZOO.values():
    for _alias in (_m.name, _m.hub_id, _m.hub_id.split("/", 1)[1]):
        _ALIASES[_alias.lower()] = _m.name
_ALIASES.update({  # the report's older spelling of the large model's name
    "roberta-wwm-large-ext": "roberta-wwm-ext-large", "chinese-roberta-wwm-large-ext": "roberta-wwm-ext-large",
})


def zoo_model(ref: str) -> ZooModel | None:
    """The zoo entry a name, hub id or title refers to, or None."""
    name = _ALIASES.get(ref.strip().lower())
    return ZOO[name] if name else None
