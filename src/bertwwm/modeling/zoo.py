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

# Format probing and config reading live in leaf modules of bertwwm.convert (re-exported here under their
# old names): the zoo imports the converters, never the reverse.
from bertwwm.convert.configs import config_from_dict
from bertwwm.convert.configs import config_needs_fixing as _config_needs_fixing
from bertwwm.convert.formats import find_tf_prefix
from bertwwm.convert.formats import tf_prefix_of as _tf_prefix_of
from bertwwm.core.errors import UserError
from bertwwm.modeling.random_init import RANDOM_PREFIX, materialise_random, parse_random_ref

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


# ---------------------------------------------------------------------------------------------------
# The contract: resolve_model and load_bert_config


def hub_id_of(ref: str) -> str | None:
    """The hub id a zoo name, hub id or title refers to, or None when `ref` is not a hub reference."""
    entry = zoo_model(ref)
    if entry is not None:
        return entry.hub_id
    parts = ref.split("/")
    if len(parts) == 2 and all(parts) and not ref.startswith((".", "~")) and \
            not ref.endswith((".zip", ".bin", ".index", ".json")):
        return ref
    return None


def resolve_model(ref: str, *, cache_dir: str | Path | None = None) -> str:
    """The one model resolver of every verb: local path -> zoo name -> hub cache -> hub.

    A zoo name (e.g. "roberta-wwm-ext"), a hub id ("hfl/chinese-roberta-wwm-ext"), a local HF folder, a TF-1
    checkpoint folder/zip, or a legacy pytorch_model.bin folder -> a local folder `from_pretrained` loads
    without the network (TF and legacy checkpoints converted once into cache_dir). A hub model comes from
    the Hugging Face cache, or is downloaded; when it is not cached and the hub cannot be reached (offline
    mode, no network) this fails within seconds with a UserError that says so, before any verb writes.
    """
    ref = str(ref)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if ref.startswith(RANDOM_PREFIX):  # "random:tiny[@SEED]": the no-pretraining control, written on first use
        return str(materialise_random(ref, cache))
    path = Path(ref).expanduser()
    if path.exists():
        return str(_resolve_local(path, cache))
    tf_prefix = path.with_name(path.name + ".index")
    if tf_prefix.is_file():  # a checkpoint prefix such as .../bert_model.ckpt
        return str(_resolve_local(tf_prefix, cache))
    hub_id = hub_id_of(ref)
    if hub_id is None:
        raise UserError("no such local folder or file (and not a zoo name or hub id; see `bertwwm models`)", ref)
    cached = cached_snapshot(hub_id)
    if cached is None and zoo_model(ref) is None and path.parent.is_dir():
        # "runs/nonexistent" is also a valid hub id; with runs/ right here, the user meant the local folder
        raise UserError(f"no such local folder ({path.parent}/ exists, so this is read as a local path, "
                        "not a hub id)", ref)
    return str(_resolve_local(cached or hub_snapshot(hub_id, ref), cache))


# ---------------------------------------------------------------------------------------------------
# The Hugging Face hub: cache first, then a quick reachability probe, then the download

HUB_PROBE_SECONDS = 3.0  # the whole "is the hub there" question is answered within this (DNS included)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_HUB_SIDE_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def hub_cache_dir() -> Path:
    """Hugging Face's cache, read from the environment now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or constants.HF_HUB_CACHE)


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _offline_by_setting() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    return None


def cached_snapshot(hub_id: str) -> Path | None:
    """The cached snapshot folder of a hub model when it holds a config and weights, else None."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(hub_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a broken cache entry: both mean "not here"
        return None
    if (folder / "config.json").is_file() and any((folder / w).is_file() for w in _WEIGHT_FILES):
        return folder
    return None


def _hub_files(hub_id: str, ref: str) -> list[str] | str:
    """The repository's file names, or why the hub cannot be reached (a string). Never longer than
    HUB_PROBE_SECONDS: the request runs in a daemon thread, so a hanging DNS lookup cannot hold us up."""
    import threading

    answer: dict = {}

    def ask() -> None:
        try:
            from huggingface_hub import HfApi

            info = HfApi(endpoint=_hub_endpoint()).model_info(hub_id, timeout=HUB_PROBE_SECONDS)
            answer["files"] = [s.rfilename for s in info.siblings or []]
        except Exception as e:  # sorted out below, in the caller's thread
            answer["error"] = e

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(HUB_PROBE_SECONDS + 0.5)
    if worker.is_alive():
        return f"no answer from {_hub_endpoint()} within {HUB_PROBE_SECONDS:.0f} s"
    if "files" in answer:
        return answer["files"]
    error = answer["error"]
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        raise UserError("the hub model is gated: accept its terms on the hub and log in (`hf auth login`)", ref)
    if isinstance(error, RepositoryNotFoundError):
        raise UserError(f"no model {hub_id!r} on the hub (nor a local folder of that name; see `bertwwm models`)",
                        ref)
    if isinstance(error, HfHubHTTPError):
        return f"the hub answered: {str(error).splitlines()[0][:160]}"
    return f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else 'no connection'}"


def hub_snapshot(hub_id: str, ref: str | None = None) -> Path:
    """A local folder with a hub model's config, vocab and PyTorch weights: from the cache, else downloaded."""
    ref = ref or hub_id
    cached = cached_snapshot(hub_id)
    if cached is not None:
        return cached
    reason = _offline_by_setting()
    files = reason or _hub_files(hub_id, ref)
    if isinstance(files, str):
        local = "" if zoo_model(ref) is not None else "no such local folder, and "
        raise UserError(
            f"{local}not in the local cache and the hub cannot be reached ({files}): download it where you are online "
            f"with `hf download {hub_id}` and copy the Hugging Face cache (~/.cache/huggingface) here, or pass "
            "a local folder", ref)
    if "model.safetensors" in files:
        weights = ["model.safetensors"]
    elif "model.safetensors.index.json" in files:
        weights = ["model.safetensors.index.json", "*.safetensors"]
    elif "pytorch_model.bin" in files:
        weights = ["pytorch_model.bin"]
    else:
        raise UserError("the hub model has no PyTorch weights (model.safetensors or pytorch_model.bin)", ref)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, cache_dir=hub_cache_dir(), endpoint=_hub_endpoint(),
                                      allow_patterns=[*_HUB_SIDE_FILES, *weights]))
    except Exception as e:  # the connection dropped, the disk is full, ...: one line, not a traceback
        raise UserError(f"download from the hub failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                        ref) from None


def load_bert_config(ref: str):
    """The transformers BertConfig of any model reference `resolve_model` accepts.

    RoBERTa-wwm checkpoints are BERT models: a config saying model_type "roberta" is read as BERT with a
    warning that explains why. Zoo names need no download (their configs are known).
    """
    random_ref = parse_random_ref(str(ref))
    if random_ref is not None:
        from bertwwm.modeling.presets import bert_config

        return bert_config(random_ref[0])
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
    config_path = Path(resolve_model(ref)) / "config.json"  # a hub id: through the cache / the download
    return config_from_dict(_read_json(config_path), config_path)


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
        from bertwwm.core.integrity import check_model_folder

        folder = path if path.is_dir() else path.parent
        folder = _single_model_folder(folder) if not (folder / "config.json").is_file() else folder
        check_model_folder(folder)  # a truncated model.safetensors is named here, not deep inside transformers
        return folder
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
    from bertwwm.core.fileio import atomic_path

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
