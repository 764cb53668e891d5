"""A run folder's state on disk: checkpoints written atomically, read back weights-only, checked before a
resume continues them; the final model; and the test of whether a run has already finished.

A checkpoint holds the weights, the optimizer, the schedule's position (step, the data position, and elapsed
seconds under a time budget), every RNG state (python, numpy, torch, CUDA, the masking collator's) per rank,
the config and the fingerprint of every phase's data: enough to continue bitwise as if never stopped.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_path
from bertwwm.pretrain.config import TRAJECTORY_FIELDS, PretrainConfig, config_json, trajectory
from bertwwm.pretrain.data import data_identity, phase_folders
from bertwwm.pretrain.distributed import Dist, all_reduce, barrier, full_state
from bertwwm.pretrain.log import METRICS, warn

CHECKPOINTS = "checkpoints"
FINAL = "final"
RUN_CONFIG = "run_config.json"
TRAINER_STATE = "trainer_state.pt"


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


# ------------------------------------------------------------------------------------------------ reading

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
        if all_reduce([bad], d)[0] == 0:  # every rank could read its part
            if k and d.main:
                warn(f"resuming from {checkpoint.name}, the latest checkpoint that is intact")
            return checkpoint, state, rank_state
        if bad:
            first_problem = first_problem or problem
            if d.main:
                warn(f"warning: checkpoint {checkpoint.name} is damaged ({problem}); trying the one before it")
    raise UserError(f"no checkpoint of this run can be read; the latest: {first_problem}", latest)


def check_resume(state: dict, cfg: PretrainConfig, folders: list[str], checkpoint: Path) -> None:
    """A resumed run must continue the same trajectory on the same data (a copy elsewhere is the same data)."""
    saved, now = trajectory(state["config"]), trajectory(config_json(cfg))
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
    before, now = trajectory(saved), trajectory(config_json(cfg))
    diff = [k for k in TRAJECTORY_FIELDS if before[k] != now[k]]
    if diff and set(diff) <= {"phases", "time_budget"}:
        raise UserError(f"this run already finished at step {steps}; a longer run would not continue it exactly "
                        "(the learning-rate schedule is fitted to the length it was given). Start a new run from "
                        f"its model instead: --init {run / FINAL}", run)
    if diff:
        raise UserError(f"this run already finished at step {steps} with other settings ({', '.join(diff)}); "
                        "choose another --out", run)
    return steps


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


# ------------------------------------------------------------------------------------------------ writing

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
    barrier(d)
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
                        "config": config_json(cfg), "data": data_identity(phase_folders(cfg))},
                       tmp / TRAINER_STATE)
        for old in checkpoint_dirs(run)[:-cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(d)


def write_final(run: Path, model, optimizer, cfg: PretrainConfig, d: Dist) -> Path:
    final = run / FINAL
    weights, _ = full_state(model, optimizer, d) if cfg.fsdp else (None, None)  # collective under FSDP
    if d.main:
        with atomic_path(final) as tmp:
            write_model(model, tmp, weights)
    barrier(d)
    return final
