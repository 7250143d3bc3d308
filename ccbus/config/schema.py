"""Schemas for config, rules and plugin options, with errors that say where.

Plugins declare their options as a subclass of :class:`Options` (a pydantic
model that forbids unknown keys), so a misspelt key is caught by
``ccbus check`` before anything connects, and reported with file, line and a
suggestion::

    ccbus.yaml:12:7: sources.cvp-prod.options: unknown key 'hots' (did you mean 'host'?)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, WithJsonSchema

from ccbus.config.durations import DURATION_PATTERN, parse_duration
from ccbus.config.suggest import did_you_mean
from ccbus.config.yamlfile import location
from ccbus.errors import ConfigError

__all__ = ["Duration", "Options", "validate"]

M = TypeVar("M", bound=BaseModel)


class Options(BaseModel):
    """Base for a plugin's options (and action parameters): unknown keys are errors.

    Example::

        class ReplayOptions(Options):
            path: str
            speed: float = 0.0
    """

    # coerce_numbers_to_str: a one-hole template keeps its value's type, so
    # `message: "{count}"` renders an int; a text parameter should take it.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


#: Seconds, written in YAML as ``30s``, ``15m``, ``1h30m`` or a number.
#: (Its JSON Schema, for editors, says both forms: ``ccbus schema``.)
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds, or e.g. 30s, 15m, 1h30m, 250ms, 2d",
        }
    ),
]


def validate(
    model: type[M],
    data: Any,
    *,
    file: Path | str,
    root: Any = None,
    prefix: Sequence[Any] = (),
) -> tuple[M | None, list[ConfigError]]:
    """Validate ``data`` against ``model``; on failure, one located error per problem.

    ``root`` is the whole loaded YAML document and ``prefix`` the key path of
    ``data`` inside it, so errors point at the right line.
    """
    try:
        return model.model_validate(data), []
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False):
            loc = tuple(prefix) + tuple(item["loc"])
            problems.append(
                ConfigError(
                    _describe(model, item, tuple(item["loc"]), prefix),
                    location(file, root if root is not None else data, loc),
                )
            )
        return None, problems


def _describe(
    model: type[BaseModel], item: Any, loc: tuple[Any, ...], prefix: Sequence[Any]
) -> str:
    dotted = ".".join(str(p) for p in tuple(prefix) + loc[:-1])
    where = f"{dotted}: " if dotted else ""
    key = loc[-1] if loc else ""
    kind = item["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        close = did_you_mean(str(key), known)
        hint = (
            f" (did you mean {close!r}?)"
            if close
            else (f" (known keys: {', '.join(sorted(known))})" if known else "")
        )
        return f"{where}unknown key {key!r}{hint}"
    if kind == "missing":
        return f"{where}missing required key {key!r}"
    message = item["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    full = ".".join(str(p) for p in tuple(prefix) + loc)
    return f"{full}: {message}" if full else message


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc``, for "did you mean"."""
    current: Any = model
    for step in loc:
        if isinstance(step, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        field = current.model_fields.get(str(step))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
