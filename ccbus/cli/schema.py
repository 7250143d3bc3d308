"""``ccbus schema``: JSON Schema of the config file and of rule files, for editors.

VS Code's YAML extension (and any editor using yaml-language-server) reads a
JSON Schema to complete keys and underline mistakes as they are typed; the
schema comes from the very pydantic models that ``ccbus check`` validates
with, and from the installed plugins (each source plugin's options, each
action's parameters), so an editor and ``check`` never disagree about what
a key is called.

What the schemas accept is what ccbus accepts, which is a little more than
the models' own JSON Schema says:

* text fields take numbers too (``agent: 1001``): :class:`Options` coerces them;
* durations take ``30s``, ``15m``, ``1h30m`` as well as seconds;
* in the config, any value may be a ``${NAME}`` or ``${credential:NAME}``
  reference, expanded before validation;
* in a rule's ``do:`` parameters, any value may be a ``{template}``, rendered
  from the event before validation.

A plugin whose models have no JSON Schema (a custom type pydantic cannot
describe) gets an open schema for its part, and a warning, so one plugin never
costs the editor support for the rest.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import click
from pydantic import BaseModel, Field, create_model
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticUserError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ccbus.actions.api import ActionSpec
from ccbus.config.file import Config
from ccbus.config.schema import Options
from ccbus.rules.model import RuleSpec
from ccbus.sources.api import SourceSpec

__all__ = ["config_schema", "rules_schema", "schema"]

#: The dialect yaml-language-server and most editors understand best.
DIALECT = "http://json-schema.org/draft-07/schema#"

#: A ``${NAME}``, ``${NAME:-default}`` or ``${credential:NAME}`` reference (config values).
VARIABLE = {
    "type": "string",
    "pattern": r"\$\{[^}]+\}",
    "description": "${NAME}, ${NAME:-default} or ${credential:NAME}, expanded when loaded",
}
#: A template with ``{expression}`` holes (rule action parameters).
TEMPLATE = {
    "type": "string",
    "pattern": r"\{[^}]*\}",
    "description": "a template: {expression} holes filled from the event",
}
#: Keys of a field schema that describe it rather than constrain it: kept outside an anyOf.
_META = ("title", "description", "default", "examples", "deprecated")


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema, widened to what ccbus's loading accepts (see the module doc).

    ``placeholder`` is the string form every non-text field may also take:
    :data:`VARIABLE` for the config, :data:`TEMPLATE` for action parameters.
    """

    placeholder: dict[str, Any] | None = VARIABLE
    #: Whether a mapping or list may be a placeholder too: a one-hole template
    #: keeps its value's type, an expanded ``${NAME}`` is always text.
    whole_containers = False

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        result = super().str_schema(schema)
        result["type"] = ["string", "number"]  # Options: coerce_numbers_to_str
        return result

    def model_field_schema(self, schema: core_schema.ModelField) -> JsonSchemaValue:
        return self._widened(super().model_field_schema(schema))

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        result = super().dict_schema(schema)
        extra = result.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            result["additionalProperties"] = self._widened(extra)
        return result

    def list_schema(self, schema: core_schema.ListSchema) -> JsonSchemaValue:
        result = super().list_schema(schema)
        items = result.get("items")
        if isinstance(items, dict) and items:
            result["items"] = self._widened(items)
        return result

    def _widened(self, field: JsonSchemaValue) -> JsonSchemaValue:
        if self.placeholder is None or not field or _takes_text(field):
            return field
        inner = {k: v for k, v in field.items() if k not in _META}
        meta = {k: v for k, v in field.items() if k in _META}
        if not inner or not (self.whole_containers or _scalar(inner)):
            return field
        return {"anyOf": [inner, dict(self.placeholder)], **meta}


class _TemplateGenerator(_Generator):
    placeholder = TEMPLATE
    whole_containers = True


class _RuleGenerator(_Generator):
    placeholder = None  # a rule's own keys are neither expanded nor rendered


def _takes_text(field: Mapping[str, Any]) -> bool:
    """Whether a field already accepts any string (so a placeholder needs no alternative)."""
    kind = field.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "string" in kinds and not ({"pattern", "enum", "const", "format"} & set(field)):
        return True
    return any(_takes_text(option) for option in field.get("anyOf", ()))


def _scalar(field: Mapping[str, Any]) -> bool:
    """Whether a field takes a number, a boolean or one of some values (what text can become)."""
    if "anyOf" in field:
        return all(_scalar(option) for option in field["anyOf"])
    if "enum" in field or "const" in field:
        return True
    kind = field.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    return kinds <= {"integer", "number", "boolean", "null"}  # not None: $ref, oneOf, {}


def _model_schema(model: type[BaseModel], generator: type[GenerateJsonSchema]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True, mode="validation", schema_generator=generator)


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _plugin_options(
    name: str, options: type[BaseModel], warnings: list[str]
) -> type[BaseModel] | None:
    """``options`` if pydantic can describe it, else None (with a warning)."""
    try:
        _model_schema(options, _Generator)
    except (PydanticInvalidForJsonSchema, PydanticUserError) as err:
        warnings.append(f"source plugin {name!r}: options have no JSON Schema ({err}); left open")
        return None
    return options


def config_schema(
    sources: Mapping[str, SourceSpec], warnings: list[str] | None = None
) -> dict[str, Any]:
    """JSON Schema of the config file, each source's ``options`` checked by its plugin.

    ``sources:`` entries are a union discriminated by ``plugin:``: the
    plugin named decides which options are known.
    """
    warnings = [] if warnings is None else warnings
    entries: list[type[BaseModel]] = []
    for name, spec in sorted(sources.items()):
        checked = _plugin_options(name, spec.options, warnings)
        required = checked is not None and any(
            f.is_required() for f in checked.model_fields.values()
        )
        options: Any = checked if checked is not None else dict[str, Any]
        plugin: Any = Literal[name]  # one model per plugin, told apart by this value
        entries.append(
            create_model(
                f"source_{_identifier(name)}",
                __base__=Options,
                __doc__=spec.description or f"A source of plugin {name!r}.",
                plugin=(plugin, Field(description="which source plugin")),
                options=(options, ...) if required else (options, Field(default_factory=dict)),
                enabled=(bool, True),
            )
        )
    entry: Any
    if not entries:
        entry = dict[str, Any]
    elif len(entries) == 1:
        entry = entries[0]
    else:
        entry = Annotated[Union[tuple(entries)], Field(discriminator="plugin")]  # noqa: UP007
    model = create_model(
        "ccbus_config",
        __base__=Config,
        __doc__="A ccbus config file (see `ccbus check -c FILE`).",
        sources=(dict[str, entry], Field(default_factory=dict)),
    )
    schema = _model_schema(model, _Generator)
    for name in sources:  # the discriminator names the plugin itself, never a ${NAME}
        entry_schema = schema.get("$defs", {}).get(f"source_{_identifier(name)}")
        if entry_schema is not None:
            entry_schema["properties"]["plugin"] = {
                "const": name,
                "type": "string",
                "description": "which source plugin",
            }
    return {"$schema": DIALECT, "title": "ccbus config", **schema}


def _action_schema(
    spec: ActionSpec, warnings: list[str]
) -> dict[str, Any]:
    """What may follow ``- NAME:`` in ``do:``: the parameters, their shorthand, or nothing."""
    try:
        params = _model_schema(spec.params, _TemplateGenerator)
    except (PydanticInvalidForJsonSchema, PydanticUserError) as err:
        warnings.append(f"action {spec.name!r}: parameters have no JSON Schema ({err}); left open")
        return {"description": spec.description} if spec.description else {}
    options: list[dict[str, Any]] = [params]
    if spec.shorthand is not None:
        short = params.get("properties", {}).get(spec.shorthand)
        if short is not None:
            options.append({k: v for k, v in short.items() if k != "title"})
    if not params.get("required"):
        options.append({"type": "null"})
    body: dict[str, Any] = {"anyOf": options} if len(options) > 1 else params
    if spec.description:
        body["description"] = spec.description
    return body


def rules_schema(
    actions: Mapping[str, ActionSpec], warnings: list[str] | None = None
) -> dict[str, Any]:
    """JSON Schema of a rule file: ``rules:`` as :class:`RuleSpec`, ``do:`` items per action."""
    warnings = [] if warnings is None else warnings
    rule = _model_schema(RuleSpec, _RuleGenerator)
    defs: dict[str, Any] = rule.pop("$defs", {})
    per_action: dict[str, Any] = {}
    for name, spec in sorted(actions.items()):
        body = _action_schema(spec, warnings)
        defs.update(body.pop("$defs", {}))
        for option in body.get("anyOf", ()):
            defs.update(option.pop("$defs", {}))
        per_action[name] = body
    rule["properties"]["do"]["items"] = {
        "type": "object",
        "description": "one action: '- log: \"text\"' or '- notify: {to: ops, body: ...}'",
        "properties": per_action,
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
    }
    case = {
        "type": "object",
        "description": "a test case, run offline by `ccbus test`",
        "properties": {
            "name": {"type": "string"},
            "events": {
                "type": "array",
                "description": "events (only `type` is required) and `wait: 15m` steps",
                "items": {"type": "object"},
            },
            "expect": {
                "type": "array",
                "description": "the calls, in order, in the `do:` shape or "
                "{action, rule, params}; `[]` for none",
                "items": {"type": "object", "minProperties": 1},
            },
            "start": {"type": "string", "description": "when the virtual clock starts"},
            "results": {
                "type": "object",
                "description": "what actions return, for the `previous` of the next one",
            },
            "secrets": {
                "type": "object",
                "description": "stand-ins for the config's secrets: (secret(\"name\"))",
                "additionalProperties": {"type": ["string", "number"]},
            },
        },
        "required": ["expect"],
        "additionalProperties": False,
    }
    return {
        "$schema": DIALECT,
        "title": "ccbus rule file",
        "type": "object",
        "properties": {
            "rules": {"type": "array", "items": {"$ref": "#/$defs/RuleSpec"}},
            "tests": {"type": "array", "items": {"$ref": "#/$defs/TestCase"}},
        },
        "additionalProperties": False,
        "$defs": {**defs, "RuleSpec": rule, "TestCase": case},
    }


@click.command(name="schema")
@click.argument("kind", type=click.Choice(["config", "rules"]))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the schema to this file (default: standard output).",
)
@click.pass_context
def schema(ctx: click.Context, kind: str, output: Path | None) -> None:
    """Write the JSON Schema of the config file or of rule files, for editors.

    Covers the installed plugins (their source options, their actions'
    parameters): regenerate it after installing one.  In VS Code with the
    YAML extension, start a file with
    ``# yaml-language-server: $schema=ccbus-rules.schema.json``.
    """
    host = ctx.obj["plugins"]
    warnings: list[str] = []
    document = (
        config_schema(host.sources, warnings)
        if kind == "config"
        else rules_schema(host.actions, warnings)
    )
    for warning in warnings:
        click.echo(click.style("warning: ", fg="yellow") + warning, err=True)
    text = json.dumps(copy.deepcopy(document), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)
