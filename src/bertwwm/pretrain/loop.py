"""The training loop: a run (or its resume) from a validated config to RUN/final.

A run goes through the recipe's phases (e.g. 128 then 512 tokens) inside one process group. Each optimizer
step consumes `batch_size` instances of the phase's prepared folder, split into `grad_accum` micro-batches
and across the torchrun ranks. The schedule runs over steps, or over wall time under a time budget (`Clock`).
"""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_write_json
from bertwwm.pretrain.clock import Clock
from bertwwm.pretrain.checkpoint import (FINAL, RUN_CONFIG, check_resume, checkpoint_dirs, choose_checkpoint,
                                         clean_stale_temporaries, finished_step, load_weights, save_checkpoint,
                                         set_rng_state, write_final)
from bertwwm.pretrain.config import PretrainConfig, config_json
from bertwwm.pretrain.data import PhaseData, collator_seed, make_collator, phase_folders
from bertwwm.pretrain.distributed import (Dist, all_reduce, barrier, init_distributed,
                                          load_optimizer_state, wrap_parallel)
from bertwwm.pretrain.log import MetricsLog, ProgressBar, StepStats, warn
from bertwwm.pretrain.step import Heldout, build_training_model, optimizer_step


def pretrain(config: PretrainConfig) -> Path:
    """Run (or resume) pretraining; return the folder of the final model (RUN/final)."""
    import torch

    cfg = config
    cfg.validate()
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
                warn(f"already finished at step {done}; nothing to do ({run / FINAL})")
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
    if all_reduce([0.0 if problem is None else 1.0], d)[0]:
        raise problem or UserError("rank 0 could not lock the run folder", run)
    return lock


def _start(cfg: PretrainConfig, folders: list[str], run: Path, checkpoint: Path | None, d: Dist):
    """What the loop starts from: (each phase's data, the model, the model that trains (DDP/FSDP/compiled),
    the optimizer, the checkpoint's trainer state or None, the start position (see `start_position`))."""
    import torch

    from bertwwm.modeling.optim import build_optimizer
    from bertwwm.modeling.vocab_extend import check_data_vocab

    state = rank_state = None
    if checkpoint is not None:
        checkpoint, state, rank_state = choose_checkpoint(run, checkpoint, d)
        check_resume(state, cfg, folders, checkpoint)
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / RUN_CONFIG, config_json(cfg))
    datas = [PhaseData(cfg, i, f, d) for i, f in enumerate(folders)]
    model = build_training_model(cfg, d)
    for data, folder in zip(datas, folders):
        check_data_vocab(data.dataset.manifest, model.config.vocab_size, Path(folder) / "manifest.json")
    if checkpoint is not None:
        load_weights(model, checkpoint)
    elif cfg.init == "random" and cfg.output_bias == "unigram":
        from bertwwm.modeling.model import set_output_bias

        # Add-0.1, not add-one: an unseen token must start far below the probability whose gradient Adam's
        # epsilon (1e-6) still turns into a full step; with add-one on a 2M-token corpus it starts at ~5e-7
        # and the rows still drift (mean cosine 0.42 after 2,250 steps, against 0.09 with add-0.1).
        set_output_bias(model.hf, datas[0].unigram_log_probs(model.config.vocab_size, smoothing=0.1))
    model.train()
    position = start_position(state, rank_state, cfg, d)
    train_model = wrap_parallel(model, cfg, d)
    optimizer = build_optimizer(model.hf, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if state is not None:
        load_optimizer_state(model, optimizer, state["optimizer"], cfg)
    if cfg.compile:
        train_model = torch.compile(train_model, dynamic=True)
    return datas, model, train_model, optimizer, state, position


def _train(cfg: PretrainConfig, folders: list[str], run: Path, checkpoint: Path | None, d: Dist) -> Path:
    from bertwwm.modeling.optim import phase_schedule

    datas, model, train_model, optimizer, state, position = _start(cfg, folders, run, checkpoint, d)
    step, consumed, elapsed_before, collator_state = position
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
        i, data = point.phase, datas[point.phase]
        if i != phase_index:
            if heldout is not None:  # the phase just ended: its last held-out score
                heldout.write(log, step, phase_index)
            collator, heldout, continued = _enter_phase(model, cfg, i, data, collator_state, d)
            consumed = consumed if continued else 0
            phase_index, collator_state = i, None
        micro_batches = [collator(items) for items in data.local_micro_batches(consumed, point.batch_size,
                                                                                cfg.grad_accum)]
        consumed += point.batch_size
        stats, grad_norm = optimizer_step(train_model, model, optimizer, params, micro_batches, step=step,
                                          batch_size=point.batch_size, lr=cfg.lr * point.lr_factor, cfg=cfg, d=d)
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
            barrier(d)  # the other ranks wait for rank 0's evaluation
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


def _enter_phase(model, cfg: PretrainConfig, index: int, data: PhaseData, collator_state: tuple | None, d: Dist):
    """(masking collator, held-out set or None, whether the checkpoint stopped inside this phase) of phase
    `index`; a checkpoint's collator continues where it stopped, a new phase's starts from its seed."""
    collator = make_collator(cfg, cfg.phases[index], collator_seed(cfg, index, d.rank), data.similar_words)
    if cfg.decoder_vocab == "corpus":  # the MLM softmax scores only this phase's tokens (restrict_output says why)
        model.restrict_output(data.training_token_ids(model.config.vocab_size))
    continued = collator_state is not None and collator_state[0] == index
    if continued:
        collator.load_state_dict(collator_state[1])
    heldout = Heldout(model, cfg, index, data, d) if (d.main or cfg.fsdp) else None
    return collator, heldout, continued


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
