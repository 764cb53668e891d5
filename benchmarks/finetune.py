"""Fine-tuning and evaluation speed: bertwwm's loop vs a plain transformers `Trainer`, same model and data.

A small BERT (4 layers, hidden 256, randomly initialised, Chinese vocab) is fine-tuned for one epoch on
a ChnSentiCorp slice and a CMRC 2018 slice, then run over the dev slice. Both sides get the same tokenised
examples (for CMRC the same sliding windows), batch size, learning rate and device; the Trainer pads each
batch dynamically (DataCollatorWithPadding) in random order, ours buckets batches by length. Evaluation
for us includes n-best decoding and scoring; for the Trainer only `predict` (the forward passes).

    python benchmarks/finetune.py [--device cuda] [--train 512] [--eval 512]

Prints one line per case and a final JSON line {"cases": {case: {"ours", "baseline", "ratio"}}} with
examples (or windows) per second; ratio > 1 means we are faster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTWWM_SHARED_DATA", REPO.parent / "shared" / "data")) / "tasks"


def build_model(folder: Path) -> str:
    from transformers import BertConfig, BertModel

    from bertwwm.text.tokens import save_tokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=512)
    BertModel(config).save_pretrained(str(folder))
    save_tokenizer(folder)
    return str(folder)


class _Items(torch.utils.data.Dataset):
    """The Encoded split as the per-example dicts a Trainer expects."""

    def __init__(self, enc, with_labels=True):
        self.enc, self.with_labels = enc, with_labels

    def __len__(self):
        return len(self.enc)

    def __getitem__(self, i):
        item = {"input_ids": self.enc.input_ids[i].tolist(), "token_type_ids": self.enc.token_type_ids[i].tolist(),
                "attention_mask": [1] * len(self.enc.input_ids[i])}
        if self.with_labels:
            item.update({k: int(v[i]) for k, v in self.enc.labels.items()})
        return item


def trainer_side(model_dir, task, train, dev, settings, device, out_dir):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from bertwwm.tasks.heads import load_pretrained

    torch.manual_seed(1)
    model, tok = load_pretrained(task, model_dir)
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size * 2, learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, warmup_steps=int(0.1 * np.ceil(len(train) / settings.batch_size)),
        weight_decay=settings.weight_decay, max_grad_norm=1.0, save_strategy="no", logging_strategy="no",
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, use_cpu=device.type == "cpu", seed=1,
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported())
    trainer = Trainer(model=model, args=args, train_dataset=_Items(train), data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    trainer.train()
    _sync(device)
    train_rate = len(train) * settings.epochs / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    trainer.predict(_Items(dev, with_labels=False))
    _sync(device)
    eval_rate = len(dev.examples) / (time.perf_counter() - t0)
    return train_rate, eval_rate


def ours_side(model_dir, task, train, dev, settings, device):
    from transformers import set_seed

    from bertwwm.finetune import predict_examples, score, train_model
    from bertwwm.tasks.heads import load_pretrained

    set_seed(1)
    model, _ = load_pretrained(task, model_dir)
    stats = train_model(model, train, settings, 1, device, progress=False)
    _sync(device)
    t0 = time.perf_counter()
    preds = predict_examples(task, model, dev, settings, settings.batch_size * 2, device)
    score(task, dev.examples, preds)
    _sync(device)
    return stats["examples_per_second"], len(dev.examples) / (time.perf_counter() - t0)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--train", type=int, default=None, help="training examples per task (default: 2000 GPU, 256 CPU)")
    ap.add_argument("--eval", type=int, default=None, help="dev examples per task (default: 1000 GPU, 256 CPU)")
    ap.add_argument("--cmrc-length", type=int, default=None, help="CMRC window length (default 512 GPU, 256 CPU)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs per side; the best counts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    n_train = args.train or (2000 if gpu else 256)
    n_eval = args.eval or (1000 if gpu else 256)

    from bertwwm.finetune import Encoded, default_settings
    from bertwwm.tasks.heads import load_tokenizer
    from bertwwm.tasks.registry import get_task

    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "small")
        tok = load_tokenizer(model_dir)
        for name, train_file, dev_file, length in (
                ("chnsenticorp", "chnsenticorp/train.tsv", "chnsenticorp/dev.tsv", 256),
                ("cmrc2018", "cmrc2018/train.json", "cmrc2018/dev.json", args.cmrc_length or (512 if gpu else 256))):
            task = get_task(name)
            settings = default_settings(task, model_dir, max_seq_length=length, batch_size=32, epochs=1)
            train = Encoded(task, task.read(DATA / train_file)[:n_train], tok, settings)
            dev = Encoded(task, task.read(DATA / dev_file)[:n_eval], tok, settings)
            # Interleaved repeats, best of each: other load on the machine hits both sides alike.
            runs_ours, runs_base = [], []
            for _ in range(args.repeats):
                runs_ours.append(ours_side(model_dir, task, train, dev, settings, device))
                runs_base.append(trainer_side(model_dir, task, train, dev, settings, device,
                                              Path(tmp) / f"trainer-{name}"))
            ours = [max(r[i] for r in runs_ours) for i in range(2)]
            base = [max(r[i] for r in runs_base) for i in range(2)]
            for i, phase in enumerate(("train", "eval")):
                unit = "windows/s" if task.is_mrc and phase == "train" else "examples/s"
                cases[f"{name}_{phase}"] = {"ours": round(ours[i], 2), "baseline": round(base[i], 2),
                                            "ratio": round(ours[i] / base[i], 3), "unit": unit}
                print(f"{name:13s} {phase:5s} ours {ours[i]:9.1f} {unit}  Trainer {base[i]:9.1f}  "
                      f"ratio {ours[i] / base[i]:.2f}", file=sys.stderr)
    print(json.dumps({"device": str(device), "train_examples": n_train, "eval_examples": n_eval,
                      "repeats": args.repeats, "threads": args.threads,
                      "model": "bert 4 layers, hidden 256", "cases": cases}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
