"""The model zoo: the report's released models, and turning any model reference into a loadable folder.

`resolve_model` accepts a zoo name ("roberta-wwm-ext"), a hub id ("hfl/chinese-roberta-wwm-ext"), a
current Hugging Face folder, a TF-1 checkpoint (folder, prefix or the released zip), or HFL's legacy
`pytorch_model.bin` folder, and returns something `from_pretrained` accepts. Checkpoints that need
converting are converted once into a cache folder (~/.cache/bertwwm/converted, or `cache_dir`).

Verb `bertwwm models` lists the zoo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bertwwm.errors import UserError

logger = logging.getLogger(__name__)

# Bump when conversion output changes, so stale cached conversions are not reused.
CONVERTER_VERSION = 1
CACHE_ENV = "BERTWWM_CACHE"


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


# ---------------------------------------------------------------------------------------------------
# Detecting what a local path holds


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bertwwm")


def detect_format(path: str | Path) -> str:
    """What a local path holds: "hf" (current folder), "tf" (TF-1 checkpoint), "legacy" (old
    pytorch_model.bin or a config that needs fixing) or "zip". UserError when it is none of these."""
    path = Path(path)
    if path.is_file():
        if _is_zip(path):
            return "zip"
        if _tf_prefix_of(path) is not None:
            return "tf"
        if path.name == "pytorch_model.bin":
            return detect_format(path.parent)
        if path.suffix in (".bin", ".pt", ".pth"):
            return "legacy"
        if path.suffix == ".safetensors":
            return detect_format(path.parent)
        raise UserError("not a model: expected a folder, a .zip, a TF checkpoint or a pytorch_model.bin", path)
    if not path.is_dir():
        raise UserError("no such file or folder", path)
    config = path / "config.json"
    if (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file():
        if not config.is_file():
            raise UserError("model folder has weights but no config.json", path)
        return "legacy" if _config_needs_fixing(config) else "hf"
    if find_tf_prefix(path) is not None:
        return "tf"
    if (path / "pytorch_model.bin").is_file():
        from bertwwm.convert.legacy import needs_renaming, read_state_dict_keys

        if not config.is_file() or _config_needs_fixing(config):
            return "legacy"
        return "legacy" if needs_renaming(read_state_dict_keys(path / "pytorch_model.bin")) else "hf"
    subfolders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
    if len(subfolders) == 1:  # a zip unpacked with its top folder
        return detect_format(subfolders[0])
    raise UserError(
        "no model found: expected config.json + model.safetensors, a TF checkpoint (*.ckpt.index + "
        "*.data-*), or pytorch_model.bin", path)


def find_tf_prefix(folder: Path) -> Path | None:
    """The checkpoint prefix in a folder (bert_model.ckpt for the released zips), or None."""
    indexes = sorted(folder.glob("*.index"))
    if not indexes:
        return None
    state = folder / "checkpoint"  # TensorFlow's pointer file names the latest checkpoint
    if state.is_file():
        for line in state.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model_checkpoint_path:"):
                name = line.split(":", 1)[1].strip().strip('"')
                if (folder / (Path(name).name + ".index")).is_file():
                    return folder / Path(name).name
    preferred = [p for p in indexes if p.name == "bert_model.ckpt.index"]
    index = preferred[0] if preferred else indexes[-1]
    return index.with_suffix("")


def _tf_prefix_of(path: Path) -> Path | None:
    """A file path given as part of a checkpoint (prefix.index, prefix.data-*, or the prefix itself)."""
    name = path.name
    if name.endswith(".index"):
        return path.with_suffix("")
    if ".data-" in name:
        return path.with_name(name.split(".data-")[0])
    return None


def _config_needs_fixing(config_path: Path) -> bool:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read config ({e})", config_path) from None
    return config.get("model_type") in ("roberta", None)


# ---------------------------------------------------------------------------------------------------
# The contract: resolve_model and load_bert_config


def resolve_model(ref: str, *, cache_dir: str | Path | None = None) -> str:
    """A zoo name (e.g. "roberta-wwm-ext"), a hub id ("hfl/chinese-roberta-wwm-ext"), a local HF folder,
    a TF-1 checkpoint folder/zip, or a legacy pytorch_model.bin folder -> something `from_pretrained`
    accepts (a local folder, converted on the fly into cache_dir when needed, or the hub id unchanged)."""
    ref = str(ref)
    path = Path(ref).expanduser()
    if path.exists():
        return str(_resolve_local(path, Path(cache_dir) if cache_dir else default_cache_dir()))
    tf_prefix = path.with_name(path.name + ".index")
    if tf_prefix.is_file():  # a checkpoint prefix such as .../bert_model.ckpt
        return str(_resolve_local(tf_prefix, Path(cache_dir) if cache_dir else default_cache_dir()))
    entry = zoo_model(ref)
    if entry is not None:
        return entry.hub_id
    if ref.startswith((".", "/", "~")) or ref.endswith((".zip", ".bin", ".index", ".json")) or ref.count("/") > 1:
        raise UserError("no such file or folder (and not a zoo name; see `bertwwm models`)", ref)
    return ref


def load_bert_config(ref: str):
    """The transformers BertConfig of any model reference `resolve_model` accepts.

    RoBERTa-wwm checkpoints are BERT models: a config saying model_type "roberta" is read as BERT with a
    warning that explains why. Zoo names need no download (their configs are known).
    """
    entry = zoo_model(ref)
    path = Path(str(ref)).expanduser()
    if entry is not None and not path.exists():
        return entry.bert_config()
    if _is_zip(path):
        return _config_in_zip(path)
    if path.exists() or Path(str(path) + ".index").is_file():
        if not path.exists():
            prefix = path
        elif path.is_file():
            prefix = _tf_prefix_of(path)
        else:
            prefix = find_tf_prefix(_single_model_folder(path))
        if prefix is not None:
            from bertwwm.convert import read_tf_bert_config

            return read_tf_bert_config(prefix.parent / "bert_config.json")
        folder = _single_model_folder(path if path.is_dir() else path.parent)
        for name in ("config.json", "bert_config.json"):
            if (folder / name).is_file():
                return config_from_dict(_read_json(folder / name), folder / name)
        raise UserError("no config.json or bert_config.json found", folder)
    try:
        from transformers import PretrainedConfig

        config_dict, _ = PretrainedConfig.get_config_dict(ref)
    except OSError as e:
        raise UserError(f"cannot fetch the model's config from the hub ({str(e).splitlines()[0]})", ref) from None
    return config_from_dict(config_dict, ref)


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


def _is_zip(path: Path) -> bool:
    """A downloaded model archive. By suffix, so that .npz/.whl/... (also zip files) are not mistaken for one;
    a .zip that is not a zip file fails later with a clear error."""
    return path.is_file() and path.suffix.lower() == ".zip"


def _config_in_zip(path: Path):
    """The config of a zipped model, read without unpacking the weights."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            is_tf = any(n.endswith(".index") for n in names)
            for wanted in (("bert_config.json",) if is_tf else ("config.json", "bert_config.json")):
                member = next((n for n in names if Path(n).name == wanted), None)
                if member is not None:
                    try:
                        raw = json.loads(zf.read(member).decode("utf-8"))
                    except (ValueError, UnicodeDecodeError) as e:
                        raise UserError(f"cannot read {member} in the zip ({e})", path) from None
                    if is_tf:
                        from bertwwm.convert import tf_config_from_dict

                        return tf_config_from_dict(raw, f"{path}:{member}")
                    return config_from_dict(raw, f"{path}:{member}")
    except zipfile.BadZipFile as e:
        raise UserError(f"corrupt zip file ({e})", path) from None
    raise UserError("no config.json or bert_config.json in the zip", path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read JSON ({e})", path) from None


def _single_model_folder(folder: Path) -> Path:
    """Step into the only subfolder of an unpacked zip when the folder itself holds no model files."""
    if any((folder / n).exists() for n in ("config.json", "bert_config.json", "pytorch_model.bin")) or \
            find_tf_prefix(folder) is not None:
        return folder
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
    return _single_model_folder(subfolders[0]) if len(subfolders) == 1 else folder


def _fingerprint(paths: list[Path]) -> str:
    """A cache key from the files' absolute paths, sizes and modification times (not contents: the
    released checkpoints are 400 MB to 1.3 GB; hashing them on every call would cost seconds)."""
    h = hashlib.sha256(f"converter-v{CONVERTER_VERSION}".encode())
    for p in sorted(paths):
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _resolve_local(path: Path, cache_dir: Path) -> Path:
    kind = detect_format(path)
    if kind == "hf":
        folder = path if path.is_dir() else path.parent
        return _single_model_folder(folder) if not (folder / "config.json").is_file() else folder
    if kind == "zip":
        return _resolve_local(_extract_zip(path, cache_dir), cache_dir)
    if kind == "tf":
        from bertwwm.convert import tf_to_hf

        prefix = _tf_prefix_of(path) if path.is_file() else find_tf_prefix(_single_model_folder(path))
        files = [p for p in prefix.parent.iterdir() if p.name.startswith(prefix.name) or
                 p.name in ("bert_config.json", "vocab.txt")]
        out = cache_dir / "converted" / f"{prefix.parent.name}-{_fingerprint(files)}"
        if not (out / "config.json").is_file():
            logger.warning("converting TF checkpoint %s into %s", prefix, out)
            tf_to_hf(prefix, out)
        return out
    # legacy
    from bertwwm.convert.legacy import convert_legacy_folder

    source = path if path.is_file() else _single_model_folder(path)
    folder = source if source.is_dir() else source.parent
    files = [p for p in folder.iterdir() if p.is_file()]
    out = cache_dir / "converted" / f"{folder.name}-{_fingerprint(files)}"
    if not (out / "config.json").is_file():
        logger.warning("converting legacy PyTorch checkpoint %s into %s", source, out)
        convert_legacy_folder(source, out)
    return out


def _extract_zip(path: Path, cache_dir: Path) -> Path:
    from bertwwm.fileio import atomic_path

    out = cache_dir / "extracted" / f"{path.stem}-{_fingerprint([path])}"
    if out.is_dir():
        return out
    try:
        with zipfile.ZipFile(path) as zf:
            model_files = ("config.json", "bert_config.json", "pytorch_model.bin", "model.safetensors")
            if not any(Path(n).name in model_files or n.endswith(".index") for n in zf.namelist()):
                raise UserError("the zip holds no model (no config, checkpoint index or weights)", path)
            bad = zf.testzip()
            if bad is not None:
                raise UserError(f"zip member {bad!r} is corrupt (CRC mismatch)", path)
            for info in zf.infolist():
                target = Path(info.filename)
                if target.is_absolute() or ".." in target.parts:
                    raise UserError(f"zip member {info.filename!r} points outside the archive", path)
            with atomic_path(out) as tmp:
                zf.extractall(tmp)
    except zipfile.BadZipFile as e:
        raise UserError(f"corrupt zip file ({e})", path) from None
    return out


# ---------------------------------------------------------------------------------------------------
# Verb: bertwwm models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show one model in detail (a zoo name, hub id or title)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def run(args: argparse.Namespace) -> int:
    models = list(ZOO.values())
    if args.name:
        entry = zoo_model(args.name)
        if entry is None:
            raise UserError(f"unknown model {args.name!r}; known: {', '.join(ZOO)}")
        models = [entry]
    if args.json:
        for m in models:
            print(json.dumps({**asdict(m), "parameters": m.parameters}, ensure_ascii=False))
        return 0
    if args.name:
        m = models[0]
        for key, value in {**asdict(m), "parameters": f"{m.parameters:,}"}.items():
            print(f"{key:>16}: {value}")
        return 0
    header = ("name", "hub id", "L/H/A", "params", "corpus", "steps", "masking")
    rows = [(m.name, m.hub_id, f"{m.layers}/{m.hidden}/{m.heads}", f"{m.parameters / 1e6:.1f}M",
             m.corpus.split(" (")[0].split(",")[0], m.steps, m.masking.split(" (")[0].split(",")[0])
            for m in models]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nUse any name or hub id with --model/--init; `bertwwm models NAME` shows corpus, batch size, "
          "optimizer and where to download the original TensorFlow files.")
    return 0
