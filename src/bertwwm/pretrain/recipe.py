"""Recipes: the bundled TOML files and your own, `--set` overrides, and the config a recipe makes.

A recipe's tables and keys are those of the schema (`config.SECTIONS`, `config.TOP_KEYS`, the fields of
`Phase`); anything else is an error naming the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from bertwwm.core.errors import UserError
from bertwwm.pretrain.config import SECTIONS, TOP_KEYS, Phase, PretrainConfig

RECIPE_SUFFIX = ".toml"


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
    """Build a PretrainConfig from a recipe dict, then apply keyword overrides (field names; None: keep)."""
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
            raise UserError(f"unknown recipe section {key!r}; known: {', '.join(TOP_KEYS)}, "
                            f"{', '.join(SECTIONS)}", where)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "recipe" not in values:
        values["recipe"] = Path(where).stem if where != "recipe" else "custom"
    return PretrainConfig(**values, where=where)


def _phase(table: Any, i: int, where: str) -> Phase:
    if not isinstance(table, dict):
        raise UserError(f"phases[{i}] must be a table", where)
    known = {f.name for f in dataclasses.fields(Phase)}
    unknown = set(table) - known
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(sorted(unknown))} in phases[{i}]; "
                        f"known: {', '.join(sorted(known))}", where)
    return Phase(**table)


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
