"""Training recipes are frozen dataclasses. What every recipe shares: it is written whole into the
model's metadata.json (under "recipe"), read back from there into an equal dataclass, and overridden
field by field from the command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import TypeAdapter, ValidationError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    Recipe = TypeVar("Recipe", bound=DataclassInstance)
else:
    Recipe = TypeVar("Recipe")

METADATA_KEY = "recipe"


def recipe_json(recipe: DataclassInstance) -> dict[str, Any]:
    """Every field of `recipe`, nested dataclasses as dicts: what metadata.json holds under "recipe"."""
    return asdict(recipe)


def from_dict(recipe_type: type[Recipe], data: Mapping[str, Any]) -> Recipe:
    """The `recipe_type` that `data` (as `recipe_json` wrote it, JSON lists for tuples) describes."""
    known = {f.name for f in fields(recipe_type)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{recipe_type.__name__} has no field {', '.join(map(repr, unknown))}: the recipe was written by "
            f"another trainer or version; its fields are {', '.join(sorted(known))}"
        )
    try:
        return TypeAdapter(recipe_type).validate_python(dict(data))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"not a {recipe_type.__name__}: {problems}") from error


def from_metadata(recipe_type: type[Recipe], metadata: Mapping[str, Any] | Path) -> Recipe:
    """The recipe a model was trained with, from its metadata.json (a path, or the parsed document)."""
    document = json.loads(metadata.read_text()) if isinstance(metadata, Path) else metadata
    if METADATA_KEY not in document:
        where = metadata if isinstance(metadata, Path) else "the metadata"
        raise ValueError(
            f"{where} has no {METADATA_KEY!r} section: the model was exported before recipes were recorded "
            "whole; its settings are in 'config' and 'training', or retrain it to record its recipe"
        )
    return from_dict(recipe_type, document[METADATA_KEY])


def with_overrides(recipe: Recipe, args: argparse.Namespace) -> Recipe:
    """`recipe` with every field that `args` names and sets (not None) replaced by the argument's value."""
    given = {f.name: getattr(args, f.name) for f in fields(recipe) if getattr(args, f.name, None) is not None}
    return replace(recipe, **given)
