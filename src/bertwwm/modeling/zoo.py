"""The model zoo: the report's released models, and turning any model reference into a loadable folder.

`resolve_model` accepts a zoo name ("roberta-wwm-ext"), a hub id ("hfl/chinese-roberta-wwm-ext"), a
current Hugging Face folder, a TF-1 checkpoint (folder, prefix or the released zip), or HFL's legacy
`pytorch_model.bin` folder, and returns something `from_pretrained` accepts. Checkpoints that need
converting are converted once into a cache folder (~/.cache/bertwwm/converted, or `cache_dir`).

This module is the zoo's front door: the table lives in `bertwwm.modeling.zoo_table`, resolving and
converting in `bertwwm.modeling.resolve`, the Hugging Face hub in `bertwwm.modeling.hub`; their names are
importable from here, as they always were. Patch a function where it is defined (e.g.
`bertwwm.modeling.hub.cached_snapshot`), since that is where its callers read it.

Verb `bertwwm models` lists the zoo.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

# Re-exported names (noqa: kept though unused in this module), among them the convert helpers' old names.
from bertwwm.convert.configs import config_from_dict  # noqa: F401
from bertwwm.convert.formats import find_tf_prefix  # noqa: F401
from bertwwm.core.errors import UserError
from bertwwm.modeling.hub import (HUB_PROBE_SECONDS, cached_snapshot, hub_cache_dir, hub_id_of,  # noqa: F401
                                  hub_snapshot)
from bertwwm.modeling.resolve import (CACHE_ENV, CONVERTER_VERSION, _extract_zip, _is_zip,  # noqa: F401
                                      _single_model_folder, default_cache_dir, detect_format, load_bert_config,
                                      resolve_model)
from bertwwm.modeling.random_init import RANDOM_PREFIX, materialise_random, parse_random_ref  # noqa: F401
from bertwwm.modeling.zoo_table import ZOO, ZooModel, bert_parameter_count, zoo_model  # noqa: F401


# ---------------------------------------------------------------------------------------------------
# Verb: bertwwm models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show one model in detail (a zoo name, hub id or title)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def run(args: argparse.Namespace) -> int:
    models = list(ZOO.values())
    if args.name:
        entry = zoo_model(args.name)
        if entry is None:
            raise UserError(f"unknown model {args.name!r}; known: {', '.join(ZOO)}")
        models = [entry]
    if args.json:
        for m in models:
            print(json.dumps({**asdict(m), "parameters": m.parameters}, ensure_ascii=False))
        return 0
    if args.name:
        m = models[0]
        for key, value in {**asdict(m), "parameters": f"{m.parameters:,}"}.items():
            print(f"{key:>16}: {value}")
        return 0
    header = ("name", "hub id", "L/H/A", "params", "corpus", "steps", "masking")
    rows = [(m.name, m.hub_id, f"{m.layers}/{m.hidden}/{m.heads}", f"{m.parameters / 1e6:.1f}M",
             m.corpus.split(" (")[0].split(",")[0], m.steps, m.masking.split(" (")[0].split(",")[0])
            for m in models]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nUse any name or hub id with --model/--init; `bertwwm models NAME` shows corpus, batch size, "
          "optimizer and where to download the original TensorFlow files.")
    return 0
