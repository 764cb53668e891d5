"""`bertwwm pretrain`: BERT-wwm / RoBERTa-wwm pretraining and continued pretraining from recipes.

The package, by concern:

    config       the schema: PretrainConfig and Phase, every setting declared once (section, trajectory,
                 check, help, flag), validation
    recipe       the TOML recipes, --set, --max-steps; a recipe -> a PretrainConfig
    distributed  the process group, its collectives, DDP / FSDP2
    data         each phase's prepared folder, instance order and held-out tail; the masking collator
    log          metrics.jsonl, TensorBoard, the progress bar
    checkpoint   checkpoints written atomically and read back for an exact resume; final/
    step         the model a run trains, one optimizer step, held-out evaluation
    loop         `pretrain`: the run from a config to RUN/final
    cli          the flags of `bertwwm pretrain`
    heldout, plot  held-out scoring against the unigram reference; curves of a run

Exact resume: the order of instances is a pure function of (seed, phase, epoch), so the data position is
the instances consumed in the current phase; checkpoints hold the weights, optimizer, the schedule's position
(step, and elapsed seconds under a time budget) and every RNG state (python, numpy, torch, CUDA, the masking
collator's), per rank. The names below are the package's public ones, importable from `bertwwm.pretrain`.
"""

from bertwwm.pretrain.checkpoint import (CHECKPOINTS, FINAL, RUN_CONFIG, TRAINER_STATE,  # noqa: F401
                                         check_resume, checkpoint_dirs, choose_checkpoint, clean_stale_temporaries,
                                         finished_step, load_weights, read_checkpoint, rng_state, save_checkpoint,
                                         saved_dropout, set_rng_state, write_final, write_model)
from bertwwm.pretrain.cli import add_arguments, config_from_args, run  # noqa: F401
from bertwwm.pretrain.config import (DURATION_UNITS, SECTIONS, TRAJECTORY_FIELDS, Phase,  # noqa: F401
                                     PretrainConfig, parse_duration, validate)
from bertwwm.pretrain.data import (PhaseData, collator_seed, data_identity, make_collator,  # noqa: F401
                                   masking_vocab, phase_folders)
from bertwwm.pretrain.distributed import (Dist, full_state, init_distributed, load_optimizer_state,  # noqa: F401
                                          wrap_parallel)
from bertwwm.pretrain.log import METRICS, MetricsLog, ProgressBar, StepStats  # noqa: F401
from bertwwm.pretrain.clock import Clock  # noqa: F401
from bertwwm.pretrain.loop import pretrain, start_position  # noqa: F401
from bertwwm.pretrain.recipe import (RECIPE_SUFFIX, apply_set, config_from_recipe, load_recipe,  # noqa: F401
                                     parse_set, recipe_names, scale_steps)
from bertwwm.pretrain.step import Heldout, build_training_model, clip_gradients, train_step  # noqa: F401
