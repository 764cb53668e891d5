"""The model a run trains, one optimizer step over it, and its held-out evaluation.

Losses are normalised by the *global* number of masked tokens (and of sequences, for NSP), so 1 process,
N processes and gradient accumulation all compute the gradient of the same big batch.
"""

from __future__ import annotations

import contextlib

from bertwwm.core.errors import UserError
from bertwwm.pretrain.config import PretrainConfig
from bertwwm.pretrain.data import PhaseData, masking_vocab
from bertwwm.pretrain.distributed import Dist, all_reduce
from bertwwm.pretrain.log import MetricsLog, StepStats


def build_training_model(cfg: PretrainConfig, d: Dist):
    import torch

    from bertwwm.modeling import zoo
    from bertwwm.modeling.model import PretrainingModel, bert_config, build_model, load_model

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


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(cfg: PretrainConfig, device):
    import torch

    if not cfg.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_step(train_model, model, micro_batches: list[dict], batch_size: int, cfg: PretrainConfig,
               d: Dist) -> StepStats:
    """Forward and backward over one optimizer step's micro-batches; the gradient of the whole global batch.

    Each rank divides by global/world; DDP's gradient average then divides the sum by the global count, so
    1 process, N processes and accumulation all compute the same gradient."""
    local_masked = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
    local_tokens = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    global_masked, global_tokens = all_reduce([float(local_masked), float(local_tokens)], d)
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
            with autocast(cfg, d.device):
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


def optimizer_step(train_model, model, optimizer, params: list, micro_batches: list[dict], *, step: int,
                   batch_size: int, lr: float, cfg: PretrainConfig, d: Dist) -> tuple[StepStats, float]:
    """Optimizer step number `step` + 1 at learning rate `lr`: the gradient of the batch, the heads alone
    during the head warm-up, clipping, the update. -> (the step's sums, the gradient norm before clipping)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    stats = train_step(train_model, model, micro_batches, batch_size, cfg, d)
    if not stats.finite():
        raise UserError(f"loss became NaN/inf at step {step + 1}; lower --lr or enable --clip-grad")
    if step < cfg.head_warmup_steps:  # a function of the step alone, so resume stays exact
        from bertwwm.modeling.head_check import freeze_body_grads

        freeze_body_grads(model)
    grad_norm = clip_gradients(params, cfg.clip_grad)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return stats, grad_norm


class Heldout:
    """The held-out set of one phase: fixed masks at `eval_mask_prob`, and the unigram reference of its data."""

    def __init__(self, model, cfg: PretrainConfig, index: int, data: PhaseData, d: Dist):
        import bertwwm.pretrain.heldout as heldout

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
        self.log_probs = data.unigram_log_probs(model.config.vocab_size) if self.items else None
        self.last_step = -1

    def write(self, log: MetricsLog, step: int, phase_index: int) -> None:
        import bertwwm.pretrain.heldout as heldout

        if not self.items or step == self.last_step:
            return
        self.last_step = step
        record = heldout.evaluate(self.model, self.batches, self.device, self.log_probs,
                                  autocast=lambda: autocast(self.cfg, self.device))
        log.write({"step": step, "phase": phase_index + 1, "split": "eval", **record})
