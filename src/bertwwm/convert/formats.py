"""Format probing: where a TF-1 checkpoint's files are. A leaf module (it imports nothing of bertwwm) so
that both the converters and the zoo can use it: the zoo imports `bertwwm.convert`, never the reverse."""

from __future__ import annotations

from pathlib import Path


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


def tf_prefix_of(path: Path) -> Path | None:
    """A file path given as part of a checkpoint (prefix.index, prefix.data-*, or the prefix itself)."""
    name = path.name
    if name.endswith(".index"):
        return path.with_suffix("")
    if ".data-" in name:
        return path.with_name(name.split(".data-")[0])
    return None
