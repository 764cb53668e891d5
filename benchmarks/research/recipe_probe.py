"""The research harness behind docs/pretrain-small-budget.md: one pretraining configuration of the tiny model,
run for a number of steps (or seconds) and scored on held-out text, printed as one JSON line.

It is deliberately smaller than `bertwwm pretrain` (no checkpoints, no phases, instances drawn at random with
replacement) so that many configurations can be compared quickly; the parts that matter are bertwwm's own:
the whole-word-mask collator, `PretrainingModel`, the optimiser's parameter groups, warm-up then linear decay.
Held-out accuracy is measured on a separately prepared folder with fixed 15% whole-word and character masks.

    bertwwm prepare train.txt --out tr64 --max-seq-length 64 --no-nsp --dynamic
    bertwwm prepare heldout.txt --out ho128 --max-seq-length 128 --no-nsp --dynamic
    python benchmarks/research/recipe_probe.py --data tr64 --heldout ho128 --steps 1500 --lr 1e-3 --mask 0.4
"""
import argparse
import json
import math
import time

import numpy as np
import torch
from bertwwm.data.storage import PreparedDataset
from bertwwm.data.collate import WholeWordMaskCollator
from bertwwm.data.masking import MaskingConfig
from bertwwm.modeling.model import PretrainingModel, build_model, bert_config
from bertwwm.modeling.optim import parameter_groups

p = argparse.ArgumentParser()
p.add_argument("--data", default="tr64")
p.add_argument("--data2", default=None, help="second phase data (longer)")
p.add_argument("--switch", type=float, default=1.0, help="fraction of budget on data")
p.add_argument("--heldout", default="ho128")
p.add_argument("--budget", type=float, default=120)
p.add_argument("--steps", type=int, default=0)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--b0", type=int, default=8)
p.add_argument("--b1", type=int, default=8)
p.add_argument("--mask", type=float, default=0.15)
p.add_argument("--maxpred", type=int, default=0)
p.add_argument("--policy", default="wwm")
p.add_argument("--dropout", type=float, default=0.0)
p.add_argument("--warmup", type=float, default=0.05)
p.add_argument("--decay", default="linear")
p.add_argument("--beta2", type=float, default=0.98)
p.add_argument("--wd", type=float, default=0.01)
p.add_argument("--clip", type=float, default=0.5)
p.add_argument("--preset", default="tiny")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--save", default=None)
p.add_argument("--tag", default="")
p.add_argument("--save_at", default="", help="comma-separated steps at which to evaluate and save the model to SAVE-stepN")
p.add_argument("--init_range", type=float, default=0.02)
p.add_argument("--output_bias", default="zero", choices=("zero", "unigram"),
               help="start the MLM output bias at zero (BERT) or at the training data's log unigram frequencies")
p.add_argument("--eps", type=float, default=1e-6)
p.add_argument("--decoder_vocab", default="full", choices=("full", "corpus"),
               help="score the whole vocabulary in the MLM softmax, or only the tokens the training data contains")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
cfg = bert_config(a.preset, dropout=a.dropout, initializer_range=a.init_range)
model = PretrainingModel(build_model(cfg, nsp=False))
opt = torch.optim.AdamW(parameter_groups(model.hf, a.wd), lr=a.lr, betas=(0.9, a.beta2), eps=a.eps,
                        fused=True)  # as `pretrain` (build_optimizer) does


def collator(ds, mask, seed):
    L = ds.manifest["max_seq_length"]
    mp = a.maxpred or max(1, int(round(L * mask)) + 2)
    return WholeWordMaskCollator(MaskingConfig(policy=a.policy, mask_prob=mask, max_predictions=mp), seed=seed,
                                 pad_to_multiple_of=8)


ds1 = PreparedDataset(a.data)
if a.output_bias == "unigram":
    from bertwwm.modeling.model import set_output_bias

    counts = ds1.token_counts(cfg.vocab_size)[:cfg.vocab_size].astype(np.float64) + 0.1  # as `pretrain` does
    set_output_bias(model.hf, np.log(counts / counts.sum()))
if a.decoder_vocab == "corpus":
    model.restrict_output(np.flatnonzero(ds1.token_counts(cfg.vocab_size)[:cfg.vocab_size]))


def embedding_health():
    """(mean pairwise cosine, mean norm) of 2,000 random rows of the word embeddings: a random init has ~(0, 0.23);
    a degenerate table, whose rows all drifted one way, has a mean cosine near 1."""
    w = model.hf.bert.embeddings.word_embeddings.weight.detach()
    rows = w[torch.randperm(len(w), generator=torch.Generator().manual_seed(0))[:2000]]
    unit = rows / rows.norm(dim=1, keepdim=True)
    n = len(unit)
    return round(float(((unit @ unit.T).sum() - n) / (n * n - n)), 3), round(float(rows.norm(dim=1).mean()), 3)
ds2 = PreparedDataset(a.data2) if a.data2 else None
ho = PreparedDataset(a.heldout)
ho_items = [ho[i] for i in range(0, len(ho), max(1, len(ho) // 600))][:600]
ho_coll = {pol: WholeWordMaskCollator(MaskingConfig(policy=pol, mask_prob=0.15, max_predictions=20), seed=1, pad_to_multiple_of=8) for pol in ("wwm", "char")}
ho_batches = {pol: [c(ho_items[i:i + 50]) for i in range(0, len(ho_items), 50)] for pol, c in ho_coll.items()}


def evaluate():
    model.eval()
    res = {}
    with torch.no_grad():
        for pol, bs in ho_batches.items():
            s = c = n = 0
            for b in bs:
                o = model(**b)
                s += float(o.mlm_loss_sum); c += float(o.mlm_correct); n += o.mlm_count
            res[pol] = (s / n, c / n)
    model.train()
    return res


def save(folder):
    from bertwwm.modeling.model import save_model
    model.hf.config.hidden_dropout_prob = 0.1  # saved for fine-tuning with BERT's dropout, as `pretrain` does
    model.hf.config.attention_probs_dropout_prob = 0.1
    save_model(model.hf, folder)


save_at = {int(x) for x in a.save_at.split(",") if x}
rng = np.random.default_rng(a.seed)
coll1 = collator(ds1, a.mask, a.seed + 1)
coll2 = collator(ds2, a.mask, a.seed + 2) if ds2 else None
t0 = time.perf_counter()
step = 0
tokens = 0
last_eval = 0
hist = []
while True:
    el = time.perf_counter() - t0
    f = (step / a.steps) if a.steps else el / a.budget
    if f >= 1:
        break
    warm = a.warmup
    if f < warm:
        lr = a.lr * f / warm
    elif a.decay == "linear":
        lr = a.lr * (1 - f) / (1 - warm)
    elif a.decay == "cos":
        lr = a.lr * 0.5 * (1 + math.cos(math.pi * (f - warm) / (1 - warm)))
    else:
        lr = a.lr
    for g in opt.param_groups:
        g["lr"] = lr
    bs = int(round(a.b0 + (a.b1 - a.b0) * min(1.0, f / 0.5)))
    if ds2 is not None and f >= a.switch:
        ds, coll = ds2, coll2
    else:
        ds, coll = ds1, coll1
    idx = rng.integers(0, len(ds), bs)
    batch = coll([ds[int(i)] for i in idx])
    out = model(**batch)
    out.loss.backward()
    if a.clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    step += 1
    tokens += int(batch["attention_mask"].sum())
    if step in save_at:
        r = evaluate()
        hist.append((step, round(el), round(r["wwm"][1], 4), round(r["char"][1], 4)))
        print(json.dumps(dict(tag=a.tag, step=step, secs=round(el), wwm_loss=round(r["wwm"][0], 3),
                              wwm_acc=round(r["wwm"][1], 4), char_acc=round(r["char"][1], 4),
                              embedding_cos_norm=embedding_health())), flush=True)
        save(f"{a.save}-step{step}")
    elif a.steps and step % (a.steps // 3) == 0 and step < a.steps:
        r = evaluate(); hist.append((step, round(el), round(r["wwm"][1], 4)))
    elif not a.steps and el - last_eval > a.budget / 3:
        last_eval = el
        r = evaluate()
        hist.append((round(el), round(r["wwm"][1], 4)))
r = evaluate()
res = dict(tag=a.tag, budget=a.budget, steps=step, tokens=tokens, secs=round(time.perf_counter()-t0),
           wwm_loss=round(r["wwm"][0], 3), wwm_acc=round(r["wwm"][1], 4), char_loss=round(r["char"][0], 3),
           char_acc=round(r["char"][1], 4), embedding_cos_norm=embedding_health(), hist=hist, args=vars(a))
print(json.dumps(res), flush=True)
if a.save:
    save(a.save)
