"""The research harness behind the fine-tuning tables of docs/pretrain-small-budget.md: `bertwwm finetune` on one
model, printed as one JSON line of per-seed dev scores, with one option the product does not have.

`--pooling mean` makes the sentence classifier read the mean of the last layer over the real tokens instead of
the [CLS] position (the pooler's dense + tanh stay; only their input changes). It exists to measure how much of
a pretrained model's disadvantage comes from [CLS], which MLM never trains. The product keeps BERT's head,
because a fine-tuned model with another pooling would not load as `AutoModelForSequenceClassification` with
the same outputs; this script patches transformers' `BertPooler` in its own process only.

    python benchmarks/research/finetune_probe.py MODEL OUT chnsenticorp --train TRAIN.tsv --seeds 5 --lr 1e-3 \\
        --epochs 3 --max-seq-length 128 [--pooling mean]
    python benchmarks/research/finetune_probe.py MODEL OUT cmrc2018 --seeds 3 --max-seq-length 256
"""
import argparse
import json
import time
from pathlib import Path

import torch

SHARED_TASKS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tasks"


def mean_pooling() -> None:
    """Patch transformers' BERT so that its pooler reads the masked mean of the last layer instead of [CLS]."""
    import transformers.models.bert.modeling_bert as bert

    mask: dict[str, torch.Tensor] = {}
    forward = bert.BertModel.forward

    def model_forward(self, input_ids=None, attention_mask=None, *args, **kwargs):
        mask["current"] = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        return forward(self, input_ids, attention_mask, *args, **kwargs)

    def pool(self, hidden_states):
        weights = mask["current"].unsqueeze(-1).to(hidden_states.dtype)
        return self.activation(self.dense((hidden_states * weights).sum(1) / weights.sum(1)))

    bert.BertModel.forward = model_forward
    bert.BertPooler.forward = pool


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("task")
    p.add_argument("--train", help="train file (default: the task's in --data-dir)")
    p.add_argument("--data-dir", default=str(SHARED_TASKS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--lr", type=float, help="default: finetune's for the model's size")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seq-length", type=int)
    p.add_argument("--pooling", choices=("cls", "mean"), default="cls")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.pooling == "mean":
        mean_pooling()
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    from bertwwm.finetune import finetune

    settings = {k: v for k, v in dict(train=a.train, learning_rate=a.lr, epochs=a.epochs, batch_size=a.batch_size,
                                      max_seq_length=a.max_seq_length).items() if v is not None}
    started = time.time()
    results = finetune(a.task, a.model, a.out, seeds=a.seeds, data_dir=a.data_dir, save_model=False, progress=False,
                       **settings)
    print(json.dumps({"model": a.model, "task": a.task, "pooling": a.pooling, "secs": round(time.time() - started),
                      "dev": [round(r["dev_score"], 2) for r in results], **settings}), flush=True)


if __name__ == "__main__":
    main()
