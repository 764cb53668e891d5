"""Fine-tuning on the benchmarks: the multi-seed runner (`bertwwm finetune`), evaluate and predict.

    settings  Settings, the one schema of a run's settings (keywords, CLI flags, run.json); defaults by size
    data      which files a run reads, splitting a single-file task, stratified samples
    encoding  a split tokenised for the model (Encoded), length-bucketed batches
    loop      the training loop of one seed, logits, predictions, the task's official score
    runs      finetune(): seeds over one run folder, results.jsonl, resume, the best model
    grid      finetune_grid(): --lr-grid
    cli       the `bertwwm finetune` command (add_arguments, run)
    evaluate  `bertwwm evaluate`: score a predictions file
    predict   `bertwwm predict`: run a fine-tuned model on new data

Everything a task needs is in its registry entry (bertwwm.tasks.registry); nothing here is per task.
The names below were all importable from the single module this package once was, and still are.
"""

from bertwwm.finetune.cli import add_arguments, quiet_progress_bars, run
from bertwwm.finetune.data import (
    SPLIT_DEV_FRACTION, SPLIT_SEED, limit_examples, resolve_files, sample_group, stratified_sample,
)
from bertwwm.finetune.encoding import BUCKET_CHUNK, Encoded, length_batches
from bertwwm.finetune.grid import finetune_grid, grid_summary
from bertwwm.finetune.loop import pick_device, predict_examples, run_model, score, train_model
from bertwwm.finetune.runs import finetune, write_results
from bertwwm.finetune.settings import SIZE_DEFAULTS, Settings, default_settings, size_defaults
from bertwwm.report import read_results

__all__ = [
    "BUCKET_CHUNK", "Encoded", "SIZE_DEFAULTS", "SPLIT_DEV_FRACTION", "SPLIT_SEED", "Settings", "add_arguments",
    "default_settings", "finetune", "finetune_grid", "grid_summary", "length_batches", "limit_examples",
    "pick_device", "predict_examples", "quiet_progress_bars", "read_results", "resolve_files", "run",
    "run_model", "sample_group", "score", "size_defaults", "stratified_sample", "train_model", "write_results",
]
