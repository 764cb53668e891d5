"""`bertwwm pretrain`: BERT-wwm / RoBERTa-wwm pretraining and continued pretraining from recipes.

A run goes through the recipe's phases (e.g. 128 then 512 tokens) inside one process group. Each optimizer
step consumes `batch_size` instances of the phase's prepared folder, split into `grad_accum` micro-batches
and across the torchrun ranks. Losses are normalised by the *global* number of masked tokens (and of
sequences, for NSP), so 1 process, N processes and gradient accumulation all compute the gradient of
the same big batch.

Exact resume: the order of instances is a pure function of (seed, phase, epoch), so the data position is
the instances consumed in the current phase; checkpoints hold the weights, optimizer, the schedule's position
(step, and elapsed seconds under a time budget) and every RNG state (python, numpy,
torch, CUDA, the masking collator's), per rank.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import re
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_path, atomic_write_json, atomic_write_text

RECIPE_SUFFIX = ".toml"
CHECKPOINTS = "checkpoints"
FINAL = "final"
METRICS = "metrics.jsonl"
RUN_CONFIG = "run_config.json"
TRAINER_STATE = "trainer_state.pt"


# ----------------------------------------------------------------------------------------------- config

@dataclass
class Phase:
    """One stage of a length schedule: its data folder, length, global batch and number of steps."""

    max_seq_length: int = 128
    batch_size: int = 256          # sequences per optimizer step, over all ranks and accumulation
    steps: int = 1000
    max_predictions: int = 20      # masked tokens per sequence (dynamic masking)
    data: str = "data"             # which folder: "data" (--data) or "data_512" (--data-512)
    lr: float | None = None        # peak learning rate of this phase (default: optim lr)
    batch_size_start: int | None = None  # ramp the batch from here up to batch_size over the phase's first half


@dataclass
class PretrainConfig:
    out: str = "run"
    data: str | None = None
    data_512: str | None = None
    recipe: str = "custom"
    description: str = ""
    # model
    init: str = "random"           # "random", a local folder, zoo name, hub id or TF-1 checkpoint
    preset: str = "base"           # shape when init == "random"
    nsp: bool = True
    dropout: float | None = None   # None: the config's (0.1)
    # masking (dynamic masking happens in the collator; static masks come from the data)
    policy: str = "wwm"
    mask_prob: float = 0.15
    decide_per: str = "token"
    data_masking: str = "any"      # what the recipe expects of the data: "static", "dynamic" or "any"
    # optimizer
    optimizer: str = "adamw"
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    clip_grad: float | None = 1.0
    # training
    phases: list[Phase] = field(default_factory=lambda: [Phase()])
    seed: int = 12345
    grad_accum: int = 1
    bf16: bool = False
    compile: bool = False
    fsdp: bool = False             # shard weights/gradients/optimizer over processes (FSDP2) instead of DDP
    save_every: int = 1000
    keep_last: int = 3
    eval_every: int = 1000
    eval_instances: int = 256      # held out from the end of each phase's data (or taken from `heldout`)
    eval_mask_prob: float = 0.15   # held-out masks at BERT's rate, whatever the training rate
    heldout: str | None = None     # a prepared folder of held-out text to evaluate on (default: the data's tail)
    time_budget: float | None = None  # seconds of wall time: the schedule runs over time and the run stops then
    log_every: int = 10
    threads: int | None = None
    resume: bool = False
    progress: bool = True
    # domain adaptation (issue 13)
    teacher: str | None = None        # distil from this model's MLM distributions at the masked positions
    distill_temperature: float = 1.0
    distill_weight: float = 1.0       # loss = MLM + weight * T^2 * KL(teacher || student)
    head_warmup_steps: int = 0        # the first N steps train the MLM/NSP heads only
    verify_data: bool = False         # hash every data file (default: only files not verified before)

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)


# TOML section -> {key in the recipe: field of PretrainConfig}
SECTIONS: dict[str, dict[str, str]] = {
    "model": {"init": "init", "preset": "preset", "nsp": "nsp", "dropout": "dropout", "teacher": "teacher",
              "distill_temperature": "distill_temperature", "distill_weight": "distill_weight",
              "head_warmup_steps": "head_warmup_steps"},
    "masking": {"policy": "policy", "mask_prob": "mask_prob", "decide_per": "decide_per",
                "data_masking": "data_masking"},
    "optim": {"name": "optimizer", "lr": "lr", "warmup_ratio": "warmup_ratio", "warmup_steps": "warmup_steps",
              "weight_decay": "weight_decay", "beta1": "beta1", "beta2": "beta2", "eps": "eps",
              "clip_grad": "clip_grad"},
    "train": {k: k for k in ("seed", "grad_accum", "bf16", "compile", "fsdp", "save_every", "keep_last", "eval_every",
                             "eval_instances", "eval_mask_prob", "log_every", "threads", "time_budget")},
}
# Values that change the training trajectory: a resumed run must agree with its checkpoint on them.
TRAJECTORY_FIELDS = ("init", "preset", "nsp", "dropout", "policy", "mask_prob", "decide_per", "optimizer", "lr",
                     "warmup_ratio", "warmup_steps", "weight_decay", "beta1", "beta2", "eps", "clip_grad",
                     "phases", "seed", "grad_accum", "bf16", "fsdp", "eval_instances", "time_budget",
                     "teacher", "distill_temperature", "distill_weight", "head_warmup_steps")


def recipe_names() -> list[str]:
    folder = resources.files("bertwwm") / "recipes"
    return sorted(p.name.removesuffix(RECIPE_SUFFIX) for p in folder.iterdir() if p.name.endswith(RECIPE_SUFFIX))


def load_recipe(name_or_file: str | Path) -> tuple[dict, str]:
    """Read a recipe (a bundled name such as "bert-wwm", or a TOML file) -> (dict, where it came from)."""
    path = Path(name_or_file)
    if not path.is_file():
        if str(name_or_file) not in recipe_names():
            raise UserError(f"unknown recipe {str(name_or_file)!r}: not a file and not one of "
                            f"{', '.join(recipe_names())}")
        path = Path(str(resources.files("bertwwm") / "recipes" / f"{name_or_file}{RECIPE_SUFFIX}"))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"recipe is not valid TOML ({e})", path) from None
    except UnicodeDecodeError:
        raise UserError("recipe is not UTF-8", path) from None


def config_from_recipe(recipe: dict, where: str = "recipe", **overrides: Any) -> PretrainConfig:
    """Build a PretrainConfig from a recipe dict, then apply keyword overrides (field names)."""
    cfg = PretrainConfig()
    values: dict[str, Any] = {}
    for key, value in recipe.items():
        if key == "description":
            values["description"] = str(value)
        elif key == "phases":
            if not isinstance(value, list) or not value:
                raise UserError("`phases` must be a non-empty array of tables ([[phases]])", where)
            values["phases"] = [_phase(p, i, where) for i, p in enumerate(value)]
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"[{key}] must be a table", where)
            for k, v in value.items():
                if k not in SECTIONS[key]:
                    raise UserError(f"unknown key {key}.{k}; known: {', '.join(SECTIONS[key])}", where)
                values[SECTIONS[key][k]] = v
        else:
            raise UserError(f"unknown recipe section {key!r}; known: description, phases, "
                            f"{', '.join(SECTIONS)}", where)
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, value in values.items():
        setattr(cfg, name, value)
    if "recipe" not in values:
        cfg.recipe = Path(where).stem if where != "recipe" else "custom"
    validate(cfg, where)
    return cfg


def _phase(table: Any, i: int, where: str) -> Phase:
    if not isinstance(table, dict):
        raise UserError(f"phases[{i}] must be a table", where)
    known = {f.name for f in dataclasses.fields(Phase)}
    unknown = set(table) - known
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(sorted(unknown))} in phases[{i}]; "
                        f"known: {', '.join(sorted(known))}", where)
    return Phase(**table)


def _check_type(where: str, name: str, value: Any, kinds: tuple, *, positive: bool = False, optional=False):
    if value is None and optional:
        return
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise UserError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}", where)
    if positive and not value > 0:
        raise UserError(f"{name} must be positive, got {value!r}", where)


def validate(cfg: PretrainConfig, where: str = "config") -> None:
    """Clear errors for bad values before any model is built."""
    from bertwwm.modeling.model import PRESETS
    from bertwwm.modeling.optim import OPTIMIZERS

    _check_type(where, "model.init", cfg.init, (str,))
    if cfg.preset not in PRESETS:
        raise UserError(f"model.preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}", where)
    _check_type(where, "model.nsp", cfg.nsp, (bool,))
    _check_type(where, "model.dropout", cfg.dropout, (int, float), optional=True)
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1), got {cfg.dropout}", where)
    if cfg.data_masking not in ("static", "dynamic", "any"):
        raise UserError(f"masking.data_masking must be static, dynamic or any, got {cfg.data_masking!r}", where)
    _check_type(where, "masking.mask_prob", cfg.mask_prob, (int, float), positive=True)
    if cfg.optimizer not in OPTIMIZERS:
        raise UserError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}", where)
    _check_type(where, "optim.lr", cfg.lr, (int, float), positive=True)
    _check_type(where, "optim.warmup_ratio", cfg.warmup_ratio, (int, float))
    if not 0 <= cfg.warmup_ratio <= 1:
        raise UserError(f"optim.warmup_ratio must be in [0, 1], got {cfg.warmup_ratio}", where)
    _check_type(where, "optim.warmup_steps", cfg.warmup_steps, (int,), optional=True)
    _check_type(where, "optim.weight_decay", cfg.weight_decay, (int, float))
    _check_type(where, "optim.clip_grad", cfg.clip_grad, (int, float), optional=True, positive=True)
    for name in ("grad_accum", "save_every", "keep_last", "eval_every", "log_every"):
        _check_type(where, f"train.{name}", getattr(cfg, name), (int,), positive=True)
    _check_type(where, "train.eval_instances", cfg.eval_instances, (int,))
    _check_type(where, "train.seed", cfg.seed, (int,))
    _check_type(where, "train.threads", cfg.threads, (int,), optional=True, positive=True)
    if isinstance(cfg.time_budget, str):
        cfg.time_budget = parse_duration(cfg.time_budget, where)
    _check_type(where, "train.time_budget", cfg.time_budget, (int, float), optional=True, positive=True)
    _check_type(where, "train.eval_mask_prob", cfg.eval_mask_prob, (int, float), positive=True)
    if cfg.eval_mask_prob > 1:
        raise UserError(f"train.eval_mask_prob must be in (0, 1], got {cfg.eval_mask_prob}", where)
    _check_type(where, "model.teacher", cfg.teacher, (str,), optional=True)
    _check_type(where, "model.distill_temperature", cfg.distill_temperature, (int, float), positive=True)
    _check_type(where, "model.distill_weight", cfg.distill_weight, (int, float))
    if cfg.distill_weight < 0:
        raise UserError(f"model.distill_weight must be >= 0, got {cfg.distill_weight}", where)
    _check_type(where, "model.head_warmup_steps", cfg.head_warmup_steps, (int,))
    if cfg.head_warmup_steps < 0:
        raise UserError(f"model.head_warmup_steps must be >= 0, got {cfg.head_warmup_steps}", where)
    for i, p in enumerate(cfg.phases):
        for name in ("max_seq_length", "batch_size", "steps", "max_predictions"):
            _check_type(where, f"phases[{i}].{name}", getattr(p, name), (int,), positive=True)
        if p.max_seq_length > 512:
            raise UserError(f"phases[{i}].max_seq_length {p.max_seq_length} exceeds BERT's 512 positions", where)
        if p.data not in ("data", "data_512"):
            raise UserError(f"phases[{i}].data must be \"data\" or \"data_512\", got {p.data!r}", where)
        _check_type(where, f"phases[{i}].lr", p.lr, (int, float), optional=True, positive=True)
        _check_type(where, f"phases[{i}].batch_size_start", p.batch_size_start, (int,), optional=True, positive=True)
        if p.batch_size_start is not None and p.batch_size_start % cfg.grad_accum:
            raise UserError(f"phases[{i}].batch_size_start {p.batch_size_start} is not a multiple of grad_accum "
                            f"{cfg.grad_accum}", where)
        if p.batch_size % cfg.grad_accum:
            raise UserError(f"phases[{i}].batch_size {p.batch_size} is not a multiple of grad_accum "
                            f"{cfg.grad_accum}", where)


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float | int, where: str | None = None) -> float:
    """'90s', '10m', '2h', '1h30m' or a plain number of seconds -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    raw = str(text).strip().lower()
    try:
        return float(raw)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", raw)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", raw).strip():
        raise UserError(f"cannot read the duration {text!r}; write e.g. 90s, 10m, 2h or 1h30m", where)
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def scale_steps(cfg: PretrainConfig, max_steps: int) -> None:
    """--max-steps N: shrink (or grow) every phase in proportion so the run totals N steps."""
    if max_steps <= 0:
        raise UserError(f"--max-steps must be positive, got {max_steps}")
    total = cfg.total_steps
    counts = [max(1, round(p.steps * max_steps / total)) for p in cfg.phases]
    counts[-1] = max(1, max_steps - sum(counts[:-1])) if len(counts) > 1 else max_steps
    for p, n in zip(cfg.phases, counts):
        p.steps = n


def parse_set(assignments: list[str] | None) -> dict[str, Any]:
    """--set section.key=value (TOML value syntax; bare words are strings)."""
    out: dict[str, Any] = {}
    for a in assignments or []:
        key, sep, raw = a.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects section.key=value, got {a!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def apply_set(recipe: dict, assignments: dict[str, Any]) -> None:
    for key, value in assignments.items():
        parts = key.split(".")
        if parts[0] == "phases" and len(parts) == 3 and parts[1].isdigit():
            phases = recipe.get("phases", [])
            i = int(parts[1])
            if not 0 <= i < len(phases):
                raise UserError(f"--set {key}: the recipe has {len(phases)} phases (0-based index)")
            phases[i][parts[2]] = value
        elif len(parts) == 2:
            recipe.setdefault(parts[0], {})[parts[1]] = value
        else:
            raise UserError(f"--set {key}: expected section.key or phases.N.key")


# ---------------------------------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed():
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return Dist(rank, world, local_rank, device)


def _all_reduce(values: list[float], d: Dist) -> list[float]:
    if d.world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


# ------------------------------------------------------------------------------------------------ data

class PhaseData:
    """The instances of one phase: a deterministic order per epoch, a held-out slice, this rank's share."""

    def __init__(self, cfg: PretrainConfig, index: int, folder: str, d: Dist):
        from bertwwm.data.storage import PreparedDataset

        phase = cfg.phases[index]
        self.dataset = PreparedDataset(folder, verify=True if cfg.verify_data else None)
        m = self.dataset.manifest
        where = Path(folder) / "manifest.json"
        if m["max_seq_length"] > phase.max_seq_length:
            raise UserError(f"phase {index + 1} trains at max length {phase.max_seq_length} but this folder was "
                            f"prepared at {m['max_seq_length']}; prepare it with --max-seq-length "
                            f"{phase.max_seq_length} (or pass the right folder)", where)
        if cfg.nsp and not m["nsp"]:
            raise UserError("the recipe trains NSP but this folder has no NSP labels; prepare it with NSP or "
                            "set model.nsp = false (--no-nsp)", where)
        if cfg.data_masking != "any" and m["masking"] != cfg.data_masking:
            raise UserError(f"the recipe expects {cfg.data_masking} masking but the folder has {m['masking']} "
                            f"masks; prepare with --masking {cfg.data_masking} or pass "
                            f"--set masking.data_masking=any", where)
        n = len(self.dataset)
        # The tail is held out unless a separate held-out folder is given.
        self.n_eval = min(cfg.eval_instances, n // 10) if cfg.eval_instances > 0 and not cfg.heldout else 0
        self.n_train = n - self.n_eval
        micro = phase.batch_size // cfg.grad_accum
        if micro % d.world:
            raise UserError(f"phase {index + 1}: micro-batch {micro} (batch {phase.batch_size} / grad_accum "
                            f"{cfg.grad_accum}) does not split over {d.world} processes")
        if self.n_train < 1:
            raise UserError("the prepared folder holds no instances", folder)
        self.seed, self.index, self.batch = cfg.seed, index, phase.batch_size
        self.micro = micro
        self.local = micro // d.world
        self.rank, self.world = d.rank, d.world
        # the macbert policy's similar-words table, built by `prepare --masking macbert` and named in the manifest
        self.similar_words = ((m.get("config") or {}).get("similar_words") or {}).get("path")
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, self.index, epoch])
            self._perm = rng.permutation(self.n_train)
            self._perm_epoch = epoch
        return self._perm

    def stream(self, start: int, count: int) -> np.ndarray:
        """Instance indices at positions [start, start+count) of the endless shuffled stream."""
        out = []
        while count > 0:
            epoch, offset = divmod(start, self.n_train)
            take = min(count, self.n_train - offset)
            out.append(self._order(epoch)[offset:offset + take])
            start += take
            count -= take
        return np.concatenate(out)

    def local_micro_batches(self, consumed: int, batch: int, grad_accum: int) -> list[list[dict]]:
        """This rank's share of each micro-batch of the optimizer step that starts at stream position `consumed`
        (instances of this phase used so far) with a global batch of `batch`."""
        micro = batch // grad_accum
        local = micro // self.world
        batches = []
        for k in range(grad_accum):
            ids = self.stream(consumed + k * micro + self.rank * local, local)
            batches.append([self.dataset[int(i)] for i in ids])
        return batches

    def eval_items(self) -> list[dict]:
        return [self.dataset[i] for i in range(self.n_train, self.n_train + self.n_eval)]


def phase_folders(cfg: PretrainConfig) -> list[str]:
    folders = []
    for i, p in enumerate(cfg.phases):
        folder = cfg.data if p.data == "data" else cfg.data_512
        if folder is None:
            flag = "--data" if p.data == "data" else "--data-512"
            raise UserError(f"phase {i + 1} (max length {p.max_seq_length}) needs a prepared folder: pass {flag} DIR")
        if not Path(folder).is_dir():
            raise UserError("prepared data folder not found", folder)
        folders.append(folder)
    if cfg.heldout is not None:  # checked before anything is written
        from bertwwm.pretrain.heldout import check_heldout
        from bertwwm.data.storage import read_manifest

        if not (Path(cfg.heldout) / "manifest.json").is_file():
            raise UserError("held-out folder not found (a folder written by `bertwwm prepare`)", cfg.heldout)
        check_heldout(read_manifest(cfg.heldout), cfg.heldout, min(p.max_seq_length for p in cfg.phases))
    return folders


def make_collator(cfg: PretrainConfig, phase: Phase, seed: int, similar_words: str | None = None):
    """The phase's dynamic-masking collator; `similar_words`: the macbert policy's table (the data's)."""
    from bertwwm.data.collate import WholeWordMaskCollator
    from bertwwm.data.masking import MaskingConfig

    mcfg = MaskingConfig(policy=cfg.policy, mask_prob=cfg.mask_prob, max_predictions=phase.max_predictions,
                         decide_per=cfg.decide_per)
    return WholeWordMaskCollator(mcfg, vocab=masking_vocab(cfg), seed=seed, pad_to_multiple_of=8,
                                 similar_words=similar_words)


def masking_vocab(cfg: PretrainConfig):
    """The vocabulary masks draw from: the --init model's extended one (`bertwwm vocab extend`), else the shipped."""
    from bertwwm.text.tokens import VocabInfo, model_vocab

    return VocabInfo.from_vocab(model_vocab(cfg.init) if cfg.init != "random" else None)


def collator_seed(cfg: PretrainConfig, phase_index: int, rank: int) -> int:
    return (cfg.seed * 1_000_003 + phase_index * 7919 + rank) % (2**63)




# ------------------------------------------------------------------------------------------- run state

def rng_state() -> dict:
    """Every global RNG's state in types `torch.load(weights_only=True)` accepts (numpy's keys as a tensor)."""
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(run: Path) -> list[Path]:
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if re.fullmatch(r"step-\d{8}", p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def data_identity(folders: list[str]) -> list[str]:
    """The fingerprint of each phase's prepared data (options + file checksums; not the path)."""
    from bertwwm.data.storage import data_fingerprint, read_manifest

    return [data_fingerprint(read_manifest(f)) for f in folders]


def _warn(message: str) -> None:
    print(f"bertwwm pretrain: {message}", file=sys.stderr, flush=True)


def read_checkpoint(checkpoint: Path, rank: int, world: int) -> tuple[dict, dict]:
    """(trainer state, this rank's state) of a checkpoint, loaded weights-only; UserError when damaged."""
    from bertwwm.core.integrity import check_safetensors, load_torch_file

    state = load_torch_file(checkpoint / TRAINER_STATE, "checkpoint trainer state")
    if not isinstance(state, dict) or not {"step", "world_size", "config", "optimizer"} <= set(state):
        raise UserError("checkpoint trainer state lacks step, world_size, config or optimizer",
                        checkpoint / TRAINER_STATE)
    if state["world_size"] != world:  # not damage: the user must change the command
        raise UserError(f"checkpoint was written by {state['world_size']} processes; resume it with the same "
                        f"number (got {world}) for an exact continuation", checkpoint)
    rank_state = load_torch_file(checkpoint / f"rank-{rank}.pt", "checkpoint rank state")
    if not isinstance(rank_state, dict) or not {"rng", "collator"} <= set(rank_state):
        raise UserError("checkpoint rank state lacks rng or collator", checkpoint / f"rank-{rank}.pt")
    check_safetensors(checkpoint / "model.safetensors")
    return state, rank_state


def choose_checkpoint(run: Path, latest: Path, d: Dist) -> tuple[Path, dict, dict]:
    """The newest readable checkpoint up to `latest`: a damaged one is reported and the one before it used."""
    candidates = [c for c in checkpoint_dirs(run) if c.name <= latest.name][::-1]
    first_problem = None
    for k, checkpoint in enumerate(candidates):
        try:
            state, rank_state = read_checkpoint(checkpoint, d.rank, d.world)
            bad = 0.0
        except UserError as e:
            if "processes; resume it with the same number" in e.message:
                raise
            state = rank_state = None
            bad, problem = 1.0, e
        if _all_reduce([bad], d)[0] == 0:  # every rank could read its part
            if k and d.main:
                _warn(f"resuming from {checkpoint.name}, the latest checkpoint that is intact")
            return checkpoint, state, rank_state
        if bad:
            first_problem = first_problem or problem
            if d.main:
                _warn(f"warning: checkpoint {checkpoint.name} is damaged ({problem}); trying the one before it")
    raise UserError(f"no checkpoint of this run can be read; the latest: {first_problem}", latest)


def check_resume(state: dict, cfg: PretrainConfig, folders: list[str], checkpoint: Path) -> None:
    """A resumed run must continue the same trajectory on the same data (a copy elsewhere is the same data)."""
    saved, now = _trajectory(state["config"]), _trajectory(_config_json(cfg))
    diff = [k for k in TRAJECTORY_FIELDS if saved[k] != now[k]]
    if diff:
        raise UserError(f"--resume with different settings than the checkpoint: {', '.join(diff)}", checkpoint)
    saved_data = state.get("data")
    if saved_data is None:
        return
    for i, (folder, before, after) in enumerate(zip(folders, saved_data, data_identity(folders))):
        if before != after:
            raise UserError(f"--resume with other data than the checkpoint: phase {i + 1}'s folder {folder} holds "
                            "different instances or was prepared with other options (its manifest fingerprint "
                            f"{after[:12]} is not the checkpoint's {before[:12]}); pass the folder the run was "
                            "trained on, or a copy of it", checkpoint)


def clean_stale_temporaries(run: Path) -> None:
    """Half-written checkpoints of a killed run (atomic_path's temporaries, staged rank files)."""
    folder = run / CHECKPOINTS
    for tmp in list(folder.glob(".step-*.tmp")) + list(run.glob(f".{FINAL}.*.tmp")):
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(folder / ".ranks", ignore_errors=True)


def finished_step(run: Path, cfg: PretrainConfig) -> int | None:
    """The step a finished run (final/ written) ended at when `cfg` asks for the same run; None when the
    run has not finished. A finished run asked for a different one is refused."""
    if not (run / FINAL).is_dir():
        return None
    try:
        saved = json.loads((run / RUN_CONFIG).read_text(encoding="utf-8"))
        steps = sum(int(p["steps"]) for p in saved["phases"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"the run has a {FINAL}/ model but no readable {RUN_CONFIG}; choose another --out",
                        run) from None
    with contextlib.suppress(OSError, ValueError, AttributeError):  # a timed run ends at the step it reached
        logged = [json.loads(line).get("step", 0) for line in
                  (run / METRICS).read_text(encoding="utf-8").splitlines() if line.strip()]
        steps = max(logged) if logged else steps
    before, now = _trajectory(saved), _trajectory(_config_json(cfg))
    diff = [k for k in TRAJECTORY_FIELDS if before[k] != now[k]]
    if diff and set(diff) <= {"phases", "time_budget"}:
        raise UserError(f"this run already finished at step {steps}; a longer run would not continue it exactly "
                        "(the learning-rate schedule is fitted to the length it was given). Start a new run from "
                        f"its model instead: --init {run / FINAL}", run)
    if diff:
        raise UserError(f"this run already finished at step {steps} with other settings ({', '.join(diff)}); "
                        "choose another --out", run)
    return steps


def _config_json(cfg: PretrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def _trajectory(cfg_dict: dict) -> dict:
    return {k: cfg_dict.get(k) for k in TRAJECTORY_FIELDS}


# ----------------------------------------------------------------------------------------------- model

def build_training_model(cfg: PretrainConfig, d: Dist):
    import torch

    from bertwwm.modeling.model import PretrainingModel, bert_config, build_model, load_model

    from bertwwm.modeling import zoo

    if cfg.init == "random":
        torch.manual_seed(cfg.seed)  # the random init is a function of the seed
        saved = bert_config(cfg.preset)
        hf = build_model(bert_config(cfg.preset, dropout=cfg.dropout), nsp=cfg.nsp)
    else:
        saved = zoo.load_bert_config(cfg.init)
        hf = load_model(cfg.init, nsp=cfg.nsp, dropout=cfg.dropout)
        if d.main and not cfg.resume:
            from bertwwm.modeling.head_check import check_mlm_head

            check_mlm_head(hf, zoo.resolve_model(cfg.init), "pretrain", warmup_steps=cfg.head_warmup_steps)
    teacher = None
    if cfg.teacher:
        from bertwwm.modeling.model import load_teacher

        teacher = load_teacher(cfg.teacher, hf.config.vocab_size, student=cfg.init).to(d.device)
    model = PretrainingModel(hf, teacher=teacher, distill_temperature=cfg.distill_temperature,
                             distill_weight=cfg.distill_weight).to(d.device)
    # model.dropout is a pretraining setting (Cramming trains without dropout); the folders we write keep the
    # model's own rates, so fine-tuning gets BERT's usual regularisation and not the pretraining's zero.
    model.saved_dropout = (saved.hidden_dropout_prob, saved.attention_probs_dropout_prob)
    return model


@contextlib.contextmanager
def saved_dropout(model):
    """The config as it is written to disk: with the dropout rates the model had before pretraining."""
    config = model.hf.config
    now = (config.hidden_dropout_prob, config.attention_probs_dropout_prob)
    keep = getattr(model, "saved_dropout", None) or now
    config.hidden_dropout_prob, config.attention_probs_dropout_prob = keep
    try:
        yield
    finally:
        config.hidden_dropout_prob, config.attention_probs_dropout_prob = now


def load_weights(model, folder: Path) -> None:
    """Exact weights of a checkpoint (safetensors) into the training model; tied copies may be absent."""
    from bertwwm.core.integrity import load_safetensors

    state = load_safetensors(folder / "model.safetensors")
    missing, unexpected = model.hf.load_state_dict(state, strict=False)
    tied = set(getattr(model.hf, "_tied_weights_keys", None) or {})
    bad = [k for k in missing if k not in tied]
    if bad or unexpected:
        raise UserError(f"checkpoint does not match the model (missing {bad[:3]}, unexpected {unexpected[:3]})",
                        folder)
    model.hf.tie_weights()


# -------------------------------------------------------------------------------------------- training

class MetricsLog:
    """metrics.jsonl (one JSON object per line) and TensorBoard scalars; written by rank 0 only."""

    def __init__(self, run: Path, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = run / METRICS
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tensorboard"), purge_step=resume_step)
        except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.tb is not None:
            split = record.get("split", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "phase"):
                    self.tb.add_scalar(f"{split}/{k}", v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(cfg: PretrainConfig, device):
    import torch

    if not cfg.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def full_state(model, optimizer, d: Dist) -> tuple[dict | None, dict]:
    """(model state dict or None, optimizer state dict), full tensors on CPU: the plain modules' own under
    DDP/single process; gathered from the shards under FSDP (a collective: every rank must call it)."""
    if not getattr(model, "fsdp", False):
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    return ({k.removeprefix("hf."): v for k, v in weights.items()},
            get_optimizer_state_dict(model, optimizer, options=options))


def write_model(model, folder: Path, weights: dict | None) -> None:
    """A standard model folder; under FSDP the gathered `weights` go into a plain CPU copy first."""
    from bertwwm.modeling.model import save_model

    if weights is None:
        with saved_dropout(model):
            save_model(model.hf, folder)
        return
    with saved_dropout(model):
        plain = type(model.hf)(model.hf.config)
        missing, unexpected = plain.load_state_dict(weights, strict=False)
        tied = set(getattr(plain, "_tied_weights_keys", None) or {})
        if [k for k in missing if k not in tied] or unexpected:
            raise RuntimeError(f"gathered FSDP state does not match the model: {missing[:3]} {unexpected[:3]}")
        plain.tie_weights()
        save_model(plain, folder)


def save_checkpoint(run: Path, step: int, model, optimizer, collator, cfg: PretrainConfig, d: Dist, *,
                    position: dict, elapsed: float) -> None:
    """Atomically write RUN/checkpoints/step-NNNNNNNN (weights, optimizer, schedule position, per-rank RNG and
    collator state). `position`: {"phase": index, "instances_consumed": n} of the phase's instance stream."""
    import torch

    ckdir = run / CHECKPOINTS
    staging = ckdir / ".ranks"
    staging.mkdir(parents=True, exist_ok=True)
    rank_state = {"rng": rng_state(), "collator": collator.state_dict(), "rank": d.rank}
    rank_file = staging / f"step-{step:08d}-rank-{d.rank}.pt"
    with atomic_path(rank_file) as tmp:
        torch.save(rank_state, tmp)
    weights, optimizer_state = full_state(model, optimizer, d)
    _barrier(d)
    if d.main:
        with atomic_path(ckdir / f"step-{step:08d}") as tmp:
            write_model(model, tmp, weights)
            for r in range(d.world):
                shutil.move(str(staging / f"step-{step:08d}-rank-{r}.pt"), str(tmp / f"rank-{r}.pt"))
            # The instance order is a function of (seed, phase, epoch): the position in that stream is the
            # whole data state.
            torch.save({"step": step, "phase": position["phase"], "data_position": position,
                        "optimizer": optimizer_state, "schedule": {"elapsed_s": float(elapsed)},
                        "world_size": d.world,
                        "config": _config_json(cfg), "data": data_identity(phase_folders(cfg))},
                       tmp / TRAINER_STATE)
        for old in checkpoint_dirs(run)[:-cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(d)


def pretrain(config: PretrainConfig) -> Path:
    """Run (or resume) pretraining; return the folder of the final model (RUN/final)."""
    import torch

    cfg = config
    validate(cfg)
    phase_folders(cfg)  # the cheap local checks first: a missing data folder is said before any hub look-up
    if cfg.init != "random":  # a model that cannot be had (offline, a typo) fails before the run folder is written
        from bertwwm.modeling import zoo

        zoo.resolve_model(cfg.init)
    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _pretrain(cfg)
    finally:
        torch.set_num_threads(previous_threads)  # an API caller's process keeps its own setting


def _pretrain(cfg: PretrainConfig) -> Path:
    folders = phase_folders(cfg)
    run = Path(cfg.out)
    existing = checkpoint_dirs(run)
    if existing and not cfg.resume:
        raise UserError(f"the run folder already has checkpoints (latest {existing[-1].name}); pass --resume to "
                        "continue it or choose another --out", run)
    if cfg.resume:
        done = finished_step(run, cfg)
        if done is not None:
            if int(os.environ.get("RANK", "0")) == 0:
                _warn(f"already finished at step {done}; nothing to do ({run / FINAL})")
            return run / FINAL
    d = init_distributed()
    if cfg.fsdp and d.world < 2:
        raise UserError("--fsdp shards the model over processes: run under torchrun with --nproc-per-node 2 or more")
    lock = None
    try:
        lock = _lock_run(run, d)
        if d.main:
            clean_stale_temporaries(run)
        return _train(cfg, folders, run, existing[-1] if (existing and cfg.resume) else None, d)
    finally:
        if lock is not None:
            lock.release()
        if d.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _lock_run(run: Path, d: Dist):
    """Rank 0 locks the run folder; every rank learns whether it could (so none waits for a missing peer)."""
    from bertwwm.core.locks import FolderLock

    lock, problem = None, None
    if d.main:
        try:
            lock = FolderLock(run, what="this run folder").acquire()
        except UserError as e:
            problem = e
    if _all_reduce([0.0 if problem is None else 1.0], d)[0]:
        raise problem or UserError("rank 0 could not lock the run folder", run)
    return lock


def _train(cfg: PretrainConfig, folders: list[str], run: Path, checkpoint: Path | None, d: Dist) -> Path:
    import torch

    from bertwwm.modeling.optim import build_optimizer, phase_schedule

    state = rank_state = None
    if checkpoint is not None:
        checkpoint, state, rank_state = choose_checkpoint(run, checkpoint, d)
        check_resume(state, cfg, folders, checkpoint)
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / RUN_CONFIG, _config_json(cfg))

    datas = [PhaseData(cfg, i, f, d) for i, f in enumerate(folders)]
    model = build_training_model(cfg, d)
    from bertwwm.modeling.vocab_extend import check_data_vocab

    for data, folder in zip(datas, folders):
        check_data_vocab(data.dataset.manifest, model.config.vocab_size, Path(folder) / "manifest.json")
    if checkpoint is not None:
        load_weights(model, checkpoint)
    model.train()

    step, consumed, elapsed_before, collator_state = start_position(state, rank_state, cfg, d)

    train_model = wrap_parallel(model, cfg, d)
    optimizer = build_optimizer(model.hf, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if state is not None:
        load_optimizer_state(model, optimizer, state["optimizer"], cfg)
    if cfg.compile:
        train_model = torch.compile(train_model, dynamic=True)

    clock = Clock(cfg.time_budget, elapsed_before, d)
    schedule = functools.partial(phase_schedule, cfg.phases, base_lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                 warmup_ratio=cfg.warmup_ratio, multiple=cfg.grad_accum * d.world)
    log = MetricsLog(run, d.main, step if state is not None else None)
    bar = ProgressBar(cfg, d, step, clock)
    window = StepStats()
    phase_index, collator, heldout = -1, None, None
    params = [p for p in model.parameters() if p.requires_grad]
    while not clock.spent() if cfg.time_budget else step < cfg.total_steps:
        point = schedule(fraction=clock.fraction()) if cfg.time_budget else schedule(step=step)
        i, data, phase = point.phase, datas[point.phase], cfg.phases[point.phase]
        if i != phase_index:
            if phase_index >= 0 and heldout is not None:  # the phase just ended: its last held-out score
                heldout.write(log, step, phase_index)
            if collator_state is None or collator_state[0] != i:
                consumed = 0
            phase_index = i
            collator = make_collator(cfg, phase, collator_seed(cfg, i, d.rank), data.similar_words)
            if collator_state is not None and collator_state[0] == i:
                collator.load_state_dict(collator_state[1])
            collator_state = None
            heldout = Heldout(model, cfg, i, data, d) if (d.main or cfg.fsdp) else None
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * point.lr_factor
        micro_batches = [collator(items) for items in data.local_micro_batches(consumed, point.batch_size,
                                                                                cfg.grad_accum)]
        consumed += point.batch_size
        stats = train_step(train_model, model, micro_batches, point.batch_size, cfg, d)
        if not stats.finite():
            raise UserError(f"loss became NaN/inf at step {step + 1}; lower --lr or enable --clip-grad")
        if step < cfg.head_warmup_steps:  # a function of the step alone, so resume stays exact
            from bertwwm.modeling.head_check import freeze_body_grads

            freeze_body_grads(model)
        grad_norm = clip_gradients(params, cfg.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window.add(stats)
        last = cfg.time_budget is None and step == cfg.total_steps  # a timed run ends after the loop
        if step % cfg.log_every == 0 or last:
            record = window.record(step, i, cfg.lr * point.lr_factor, grad_norm, point.batch_size, clock.elapsed())
            log.write(record)
            bar.show(record)
            window = StepStats()
        bar.advance(step)
        if step % cfg.eval_every == 0 or last:
            if heldout is not None:
                heldout.write(log, step, i)
            _barrier(d)  # the other ranks wait for rank 0's evaluation
        if step % cfg.save_every == 0 and not last:
            save_checkpoint(run, step, model, optimizer, collator, cfg, d,
                            position={"phase": i, "instances_consumed": consumed}, elapsed=clock.elapsed())
    if window.mlm_count:  # a timed run stops between logging steps: its last window and held-out score
        log.write(window.record(step, phase_index, cfg.lr * point.lr_factor, grad_norm, point.batch_size,
                                clock.elapsed()))
    if heldout is not None:
        heldout.write(log, step, phase_index)
    bar.close()
    log.close()
    return write_final(run, model, optimizer, cfg, d)


# ------------------------------------------------------------------------------------------- loop parts

def start_position(state: dict | None, rank_state: dict | None, cfg: PretrainConfig, d: Dist):
    """(step, instances of the phase consumed, elapsed seconds, (phase, collator state) or None) to start from:
    a checkpoint's, with every RNG restored, or a new run's, with the global RNGs seeded per rank (dropout and
    anything else drawing from them)."""
    import torch

    if state is None:
        random.seed(cfg.seed + d.rank)
        np.random.seed((cfg.seed + d.rank) % 2**32)
        torch.manual_seed(cfg.seed + d.rank)
        return 0, 0, 0.0, None
    set_rng_state(rank_state["rng"])
    consumed = int((state.get("data_position") or {}).get("instances_consumed", 0))
    elapsed = float((state.get("schedule") or {}).get("elapsed_s", 0.0))
    return state["step"], consumed, elapsed, (state["phase"], rank_state["collator"])


def write_final(run: Path, model, optimizer, cfg: PretrainConfig, d: Dist) -> Path:
    final = run / FINAL
    weights, _ = full_state(model, optimizer, d) if cfg.fsdp else (None, None)  # collective under FSDP
    if d.main:
        with atomic_path(final) as tmp:
            write_model(model, tmp, weights)
    _barrier(d)
    return final


_now = time.monotonic  # the run's clock (tests replace it with a deterministic one)


class Clock:
    """Wall time of a run, continued across resumes; under torchrun every rank follows rank 0's clock, so
    all ranks change phase and stop at the same step."""

    def __init__(self, budget: float | None, elapsed_before: float, d: Dist):
        self.budget, self.before, self.d = budget, elapsed_before, d
        self.start = _now()
        self._last = elapsed_before

    def elapsed(self) -> float:
        """Seconds so far: as of the last tick under a budget (what every rank agreed on), else now."""
        return self._last if self.budget is not None else self.before + (_now() - self.start)

    def tick(self) -> float:
        value = self.before + (_now() - self.start)
        if self.budget is not None and self.d.world > 1:
            value = _broadcast_float(value, self.d)
        self._last = value
        return value

    def fraction(self) -> float:
        return self.tick() / self.budget

    def spent(self) -> bool:
        return self.tick() >= self.budget


def _broadcast_float(value: float, d: Dist) -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.broadcast(t, src=0)
    return float(t.item())


@dataclass
class StepStats:
    """Named sums over the steps of a logging window (summed over ranks)."""

    mlm_loss_sum: float = 0.0
    mlm_correct: float = 0.0
    mlm_count: float = 0.0
    nsp_loss_sum: float = 0.0
    nsp_correct: float = 0.0
    nsp_count: float = 0.0
    tokens: float = 0.0
    distill_kl_sum: float = 0.0
    started: float = field(default_factory=lambda: time.perf_counter())

    SUMS = ("mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count", "tokens",
            "distill_kl_sum")

    def add(self, other: StepStats) -> None:
        for k in self.SUMS:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def finite(self) -> bool:
        return math.isfinite(self.mlm_loss_sum) and math.isfinite(self.nsp_loss_sum)

    def reduced(self, d: Dist) -> StepStats:
        values = _all_reduce([getattr(self, k) for k in self.SUMS], d)
        return StepStats(*values, started=self.started)

    def record(self, step: int, phase: int, lr: float, grad_norm: float, batch: int, elapsed: float) -> dict:
        mlm_loss = self.mlm_loss_sum / max(self.mlm_count, 1)
        nsp_loss = self.nsp_loss_sum / self.nsp_count if self.nsp_count else 0.0
        record = {"step": step, "phase": phase + 1, "split": "train", "loss": mlm_loss + nsp_loss,
                  "mlm_loss": mlm_loss, "mlm_acc": self.mlm_correct / max(self.mlm_count, 1), "lr": lr,
                  "grad_norm": grad_norm, "batch_size": batch,
                  "tokens_per_s": self.tokens / max(time.perf_counter() - self.started, 1e-9), "elapsed_s": elapsed}
        if self.nsp_count:
            record.update(nsp_loss=nsp_loss, nsp_acc=self.nsp_correct / self.nsp_count)
        if self.distill_kl_sum:
            record.update(distill_kl=self.distill_kl_sum / max(self.mlm_count, 1))  # per masked token
        return record


def train_step(train_model, model, micro_batches: list[dict], batch_size: int, cfg: PretrainConfig,
               d: Dist) -> StepStats:
    """Forward and backward over one optimizer step's micro-batches; the gradient of the whole global batch.

    Each rank divides by global/world; DDP's gradient average then divides the sum by the global count, so
    1 process, N processes and accumulation all compute the same gradient."""
    local_masked = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
    local_tokens = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    global_masked, global_tokens = _all_reduce([float(local_masked), float(local_tokens)], d)
    mlm_norm = max(global_masked, 1.0) / d.world
    nsp_norm = batch_size / d.world
    stats = StepStats()
    for k, batch in enumerate(micro_batches):
        batch = _to_device(batch, d.device)
        sync = contextlib.nullcontext()
        last = k == len(micro_batches) - 1
        if cfg.fsdp:
            model.set_requires_gradient_sync(last)  # reduce-scatter once, after the last micro-batch
        elif d.world > 1 and not last:
            sync = train_model.no_sync()
        with sync:
            with _autocast(cfg, d.device):
                out = train_model(**batch, mlm_normaliser=mlm_norm, nsp_normaliser=nsp_norm)
            out.loss.backward()
        kl = getattr(out, "distill_kl_sum", None)
        stats.add(StepStats(float(out.mlm_loss_sum), float(out.mlm_correct), out.mlm_count,
                            float(out.nsp_loss_sum or 0.0), float(out.nsp_correct or 0), out.nsp_count,
                            distill_kl_sum=0.0 if kl is None else float(kl)))
    stats = stats.reduced(d)  # every rank sees the same sums (and NaNs)
    stats.tokens = global_tokens
    return stats


def clip_gradients(params: list, max_norm: float | None) -> float:
    import torch

    if not max_norm:
        return float("nan")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def wrap_parallel(model, cfg: PretrainConfig, d: Dist):
    """FSDP2 shards (each encoder layer its own group; the root keeps the embeddings and heads, so the tied
    embedding/decoder matrix stays one parameter), DDP replicas over several processes, else the model."""
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.hf.bert.encoder.layer:
            fully_shard(layer)
        fully_shard(model)
        model.fsdp = True
        return model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    return model


def load_optimizer_state(model, optimizer, saved: dict, cfg: PretrainConfig) -> None:
    if cfg.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(saved)


class Heldout:
    """The held-out set of one phase: fixed masks at `eval_mask_prob`, and the unigram reference of its data."""

    def __init__(self, model, cfg: PretrainConfig, index: int, data: PhaseData, d: Dist):
        from bertwwm.pretrain import heldout

        phase = cfg.phases[index]
        self.model, self.cfg, self.device, self.micro = model, cfg, d.device, data.micro
        if cfg.heldout:
            self.items = heldout.heldout_items(cfg.heldout, cfg.eval_instances, phase.max_seq_length)
        else:
            self.items = data.eval_items()
        scale = cfg.eval_mask_prob / cfg.mask_prob
        collator = heldout.evaluation_collator(cfg.policy, cfg.eval_mask_prob,
                                               round(phase.max_predictions * scale), cfg.decide_per,
                                               data.similar_words)
        collator.vocab = masking_vocab(cfg)  # ids of an extended vocabulary are valid too
        # Masked once: every evaluation of the phase scores the same positions.
        self.batches = [collator(self.items[k:k + self.micro]) for k in range(0, len(self.items), self.micro)]
        own_tail = [] if cfg.heldout else self.items
        self.log_probs = (heldout.unigram_log_probs(data.dataset, own_tail, model.config.vocab_size)
                          if self.items else None)
        self.last_step = -1

    def write(self, log: MetricsLog, step: int, phase_index: int) -> None:
        from bertwwm.pretrain import heldout

        if not self.items or step == self.last_step:
            return
        self.last_step = step
        record = heldout.evaluate(self.model, self.batches, self.device, self.log_probs,
                                  autocast=lambda: _autocast(self.cfg, self.device))
        log.write({"step": step, "phase": phase_index + 1, "split": "eval", **record})


class ProgressBar:
    """tqdm over steps, or over seconds of the time budget; rank 0 only."""

    def __init__(self, cfg: PretrainConfig, d: Dist, step: int, clock: Clock):
        self.bar, self.clock, self.timed = None, clock, cfg.time_budget is not None
        if d.main and cfg.progress:
            from tqdm import tqdm

            if self.timed:
                self.bar = tqdm(total=round(cfg.time_budget), initial=round(clock.elapsed()),
                                desc=f"pretrain {cfg.recipe}", unit="s", dynamic_ncols=True)
            else:
                self.bar = tqdm(total=cfg.total_steps, initial=step, desc=f"pretrain {cfg.recipe}", unit="step",
                                dynamic_ncols=True)

    def show(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(step=record["step"], loss=f"{record['mlm_loss']:.3f}", acc=f"{record['mlm_acc']:.3f}",
                                 tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)

    def advance(self, step: int) -> None:
        if self.bar is None:
            return
        if self.timed:
            self.bar.update(max(0, min(round(self.clock.elapsed()), self.bar.total) - self.bar.n))
        else:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

# ------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, metavar="NAME|FILE",
                        help="bundled recipe name (" + ", ".join(recipe_names()) + ") or a TOML file")
    parser.add_argument("--data", metavar="DIR", help="prepared folder (`bertwwm prepare`) of the first phase")
    parser.add_argument("--data-512", metavar="DIR", help="prepared folder of the phases marked data_512")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder: checkpoints, logs, final/")
    parser.add_argument("--init", metavar="MODEL",
                        help="start from a model: local folder, zoo name, hub id, TF checkpoint, or 'random'")
    parser.add_argument("--preset", help="model shape for random init: tiny, small, base, large")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--verify", action="store_true",
                        help="check the sha256 of every data file against its manifest before training (by "
                             "default only files not verified before are hashed)")
    parser.add_argument("--max-steps", type=int, metavar="N", help="total steps (phases scaled in proportion)")
    parser.add_argument("--time-budget", metavar="DURATION",
                        help="train for this much wall time (90s, 10m, 2h, 1h30m): the learning-rate schedule, "
                             "batch ramp and phases run over time instead of steps, and final/ is saved when it "
                             "is spent (resumable)")
    parser.add_argument("--heldout", metavar="DIR",
                        help="prepared folder of held-out text to evaluate MLM on (default: the data's last "
                             "eval_instances instances, which are never trained on)")
    parser.add_argument("--save-every", type=int, metavar="N")
    parser.add_argument("--keep-last", type=int, metavar="K")
    parser.add_argument("--batch-size", type=int, metavar="B", help="global batch of every phase")
    parser.add_argument("--grad-accum", type=int, metavar="N")
    parser.add_argument("--lr", type=float, metavar="X")
    parser.add_argument("--optimizer", choices=("adamw", "lamb"))
    parser.add_argument("--warmup-steps", type=int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="S")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    parser.add_argument("--fsdp", action=argparse.BooleanOptionalAction, default=None,
                        help="shard the model over the torchrun processes (FSDP2) instead of replicating it (DDP)")
    parser.add_argument("--nsp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--clip-grad", type=float, metavar="X")
    parser.add_argument("--eval-every", type=int, metavar="N")
    parser.add_argument("--log-every", type=int, metavar="N")
    parser.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override any recipe value, e.g. --set optim.warmup_ratio=0.01 "
                             "--set phases.1.batch_size=256 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--teacher", metavar="MODEL",
                        help="distil: add a KL loss towards this model's MLM distributions at the masked positions")
    parser.add_argument("--distill-temperature", type=float, metavar="T", help="softmax temperature (1)")
    parser.add_argument("--distill-weight", type=float, metavar="W", help="weight of the T^2-scaled KL term (1)")
    parser.add_argument("--head-warmup-steps", type=int, metavar="N",
                        help="train only the MLM (and NSP) head for the first N steps (a fresh or missing head)")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    recipe, where = load_recipe(args.recipe)
    apply_set(recipe, parse_set(args.set))
    overrides = dict(out=args.out, data=args.data, data_512=args.data_512, init=args.init, preset=args.preset,
                     save_every=args.save_every, keep_last=args.keep_last, grad_accum=args.grad_accum,
                     lr=args.lr, optimizer=args.optimizer, warmup_steps=args.warmup_steps, seed=args.seed,
                     bf16=args.bf16, compile=args.compile, fsdp=args.fsdp, nsp=args.nsp, clip_grad=args.clip_grad,
                     eval_every=args.eval_every, log_every=args.log_every, threads=args.threads,
                     resume=args.resume or None, progress=not args.no_progress, heldout=args.heldout,
                     time_budget=None if args.time_budget is None else parse_duration(args.time_budget),
                     teacher=args.teacher, distill_temperature=args.distill_temperature,
                     distill_weight=args.distill_weight, head_warmup_steps=args.head_warmup_steps,
                     verify_data=args.verify or None)
    cfg = config_from_recipe(recipe, where, **overrides)
    if args.batch_size is not None:
        for p in cfg.phases:
            p.batch_size = args.batch_size
    if args.max_steps is not None:
        scale_steps(cfg, args.max_steps)
    validate(cfg, where)
    if cfg.data is None and any(p.data == "data" for p in cfg.phases):
        raise UserError("--data DIR is required (a folder written by `bertwwm prepare`)")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    final = pretrain(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final model: {final}", file=sys.stderr)
    return 0
