"""Turning any model reference into a folder `from_pretrained` loads without the network.

`resolve_model` accepts a zoo name ("roberta-wwm-ext"), a hub id ("hfl/chinese-roberta-wwm-ext"), a
current Hugging Face folder, a TF-1 checkpoint (folder, prefix or the released zip), HFL's legacy
`pytorch_model.bin` folder or "random:PRESET[@SEED]". Checkpoints that need converting are converted once into
a cache folder (~/.cache/bertwwm/converted, or `cache_dir`). `load_bert_config` reads the config of any such
reference, without a download where it can. The hub side is `bertwwm.modeling.hub`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

# Format probing and config reading live in leaf modules of bertwwm.convert: the zoo imports the converters,
# never the reverse.
from bertwwm.convert.configs import config_from_dict
from bertwwm.convert.configs import config_needs_fixing as _config_needs_fixing
from bertwwm.convert.formats import find_tf_prefix
from bertwwm.convert.formats import tf_prefix_of as _tf_prefix_of
from bertwwm.core.errors import UserError
from bertwwm.modeling.hub import cached_snapshot, hub_id_of, hub_snapshot
from bertwwm.modeling.random_init import RANDOM_PREFIX, materialise_random, parse_random_ref
from bertwwm.modeling.zoo_table import zoo_model

logger = logging.getLogger("bertwwm.modeling.zoo")  # the name these messages have always had (logging configs)

# Bump when conversion output changes, so stale cached conversions are not reused.
CONVERTER_VERSION = 1
CACHE_ENV = "BERTWWM_CACHE"


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
