"""``ccbus schema``: the JSON Schema editors read agrees with what ``ccbus check`` accepts.

The schemas are written by the real ``ccbus`` command (installed plugins
included), then the shipped config and rule files are validated against them
with the ``jsonschema`` library, and typical mistakes must be rejected.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import CCBUS, REPO

from ccbus.config.yamlfile import load_yaml
from ccbus.rules.testing import CASE_KEYS


def generate(kind: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("schema") / f"ccbus-{kind}.schema.json"
    proc = subprocess.run([CCBUS, "schema", kind, "-o", str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    document: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(document)
    return document


@pytest.fixture(scope="module")
def config_validator(tmp_path_factory: pytest.TempPathFactory) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(generate("config", tmp_path_factory))


@pytest.fixture(scope="module")
def rules_validator(tmp_path_factory: pytest.TempPathFactory) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(generate("rules", tmp_path_factory))


def problems(validator: jsonschema.Draft7Validator, document: Any) -> list[str]:
    """Every message, nested ones (the alternatives of an anyOf/oneOf) included."""
    found: list[str] = []

    def walk(errors: Any) -> None:
        for error in errors:
            found.append(f"{'.'.join(map(str, error.absolute_path))}: {error.message}")
            walk(error.context or [])

    walk(validator.iter_errors(document))
    return found


def test_the_schema_goes_to_standard_output_without_o() -> None:
    proc = subprocess.run([CCBUS, "schema", "rules"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["title"] == "ccbus rule file"


# yaml-language-server reads YAML 1.2, where `on:` is a key (PyYAML would make it True):
# ccbus's own loader reads it the same way.
def test_the_shipped_config_is_valid(config_validator: jsonschema.Draft7Validator) -> None:
    assert problems(config_validator, load_yaml(REPO / "examples" / "ccbus.yaml")) == []


@pytest.mark.parametrize("path", sorted((REPO / "rules").glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_rules_are_valid(rules_validator: jsonschema.Draft7Validator,
                                     path: Path) -> None:
    assert problems(rules_validator, load_yaml(path)) == []


def test_what_loading_accepts_is_valid(config_validator: jsonschema.Draft7Validator,
                                       rules_validator: jsonschema.Draft7Validator) -> None:
    """Durations as text, ${NAME} for numbers, numbers for text, templates for any parameter."""
    config = {
        "sources": {"cvp": {"plugin": "cisco-cvp",
                            "options": {"broker": {"url": "stomp://mq:61613", "client_id": "c1"},
                                        "syslog": {"queue_size": "${SYSLOG_QUEUE}"}}},
                    "r": {"plugin": "replay", "options": {"path": "x.jsonl", "speed": 10}}},
        "dedup_window": "10m",
        "traces": "${TRACES:-20}",
        "rules": "rules",
    }
    assert problems(config_validator, config) == []
    rules = {"rules": [{
        "name": "r1", "on": "call.abandoned", "if": True,
        "throttle": {"per": "queue", "every": "1h30m"},
        "do": [{"log": "text"}, {"log": {"message": 42, "level": "{level}"}},
               {"notify": {"to": "ops", "body": "b"}},
               {"webhook": {"url": "https://crm.example/x", "json": "{payload}"}}],
    }], "tests": [{"name": "t", "events": [{"type": "call.abandoned"}, {"wait": "5m"}],
                   "expect": [{"log": "text"}], "secrets": {"crm": "test-value"}}]}
    assert problems(rules_validator, rules) == []


def test_the_config_schema_rejects_a_misspelt_key_and_a_wrong_type(
    config_validator: jsonschema.Draft7Validator,
) -> None:
    assert "Additional properties are not allowed ('htp' was unexpected)" in " ".join(
        problems(config_validator, {"htp": {"listen": "127.0.0.1:8787"}}))
    assert "traces: 'many' is not of type 'integer'" in problems(config_validator,
                                                                 {"traces": "many"})
    assert "dedup_window: '10 parsecs' is not valid under any of the given schemas" in problems(
        config_validator, {"dedup_window": "10 parsecs"})


def test_source_options_are_checked_per_plugin(
    config_validator: jsonschema.Draft7Validator,
) -> None:
    """``sources:`` is discriminated by ``plugin:``: each plugin's own option names count."""
    typo = {"sources": {"crm": {"plugin": "webhook", "options": {"hmac_secet": "x"}}}}
    assert ("sources.crm.options: Additional properties are not allowed "
            "('hmac_secet' was unexpected)") in problems(config_validator, typo)
    wrong = {"sources": {"r": {"plugin": "replay", "options": {"path": "x", "speed": "fast"}}}}
    assert "sources.r.options.speed: 'fast' is not of type 'number'" in problems(
        config_validator, wrong)
    # an installed plugin's options (ccbus-cisco-cvp), not only the built-ins'
    cvp = {"sources": {"cvp": {"plugin": "cisco-cvp", "options": {"broker": {"ulr": "stomp://mq"}}}}}
    assert any("'ulr' was unexpected" in p for p in problems(config_validator, cvp))
    unknown = {"sources": {"x": {"plugin": "no-such-plugin"}}}
    assert problems(config_validator, unknown) != []


def test_the_rules_schema_rejects_a_misspelt_key_and_a_wrong_type(
    rules_validator: jsonschema.Draft7Validator,
) -> None:
    rule = {"name": "r1", "on": "call.abandoned", "do": [{"log": "x"}]}
    assert "rules.0: Additional properties are not allowed ('iff' was unexpected)" in problems(
        rules_validator, {"rules": [{**rule, "iff": "True"}]})
    assert "rules.0.count.at_least: 'five' is not of type 'integer'" in problems(
        rules_validator, {"rules": [{**rule, "count": {"at_least": "five", "within": "10m"}}]})
    # action parameters come from each action's own model
    misspelt = {"rules": [{**rule, "do": [{"notify": {"to": "ops", "bdy": "b"}}]}]}
    assert "rules.0.do.0.notify: Additional properties are not allowed ('bdy' was unexpected)" \
        in problems(rules_validator, misspelt)
    unknown_action = {"rules": [{**rule, "do": [{"notfy": {"body": "b"}}]}]}
    assert "rules.0.do.0: Additional properties are not allowed ('notfy' was unexpected)" \
        in problems(rules_validator, unknown_action)
    wrong_type = {"rules": [{**rule, "do": [{"webhook": {"url": "https://x", "timeout": []}}]}]}
    assert problems(rules_validator, wrong_type) != []
    # an installed plugin's action (ccbus-cucm)
    cucm = {"rules": [{**rule, "do": [{"cucm.make_call": {"agnt": "1001", "number": "1"}}]}]}
    assert any("'agnt' was unexpected" in p for p in problems(rules_validator, cucm))


def test_test_cases_have_the_keys_the_runner_takes(
    rules_validator: jsonschema.Draft7Validator,
) -> None:
    assert sorted(rules_validator.schema["$defs"]["TestCase"]["properties"]) == sorted(CASE_KEYS)
