"""``ccbus test -c CONFIG``: rules that read ``secret()`` are tested with their config.

Run through the real ``ccbus`` entry point, with and without the
``$CREDENTIALS_DIRECTORY`` the config's secrets come from (CI has none).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support import CCBUS, write

REAL = "the-real-crm-secret-4711"

RULES = """
    rules:
      - name: abandoned-to-crm
        on: call.abandoned
        do:
          - webhook:
              url: https://crm.example/abandoned
              hmac_secret: '{secret("crm-hmac")}'
              json: {caller: "{caller}", signed_with: '{secret("crm-hmac")}'}
    tests:
      - name: stood in
        secrets: {crm-hmac: test-hmac}
        events: [{type: call.abandoned, data: {caller: "+4930123456"}}]
        expect:
          - webhook: {hmac_secret: test-hmac, json: {caller: "+4930123456"}}
      - name: from the config
        events: [{type: call.abandoned, data: {caller: "+4930123456"}}]
        expect:
          - webhook: {json: {caller: "+4930123456"}}
"""


def project(tmp_path: Path) -> Path:
    write(tmp_path / "etc" / "crm-rules" / "crm.yaml", RULES)
    return write(tmp_path / "etc" / "ccbus.yaml", """
        rules: [crm-rules]
        secrets:
          crm-hmac: ${credential:crm-hmac}
    """)


def ccbus_test(*args: str, credentials: Path | None, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env.update(CCBUS_DISABLE_PLUGIN_AUTOLOAD="1", NO_COLOR="1")
    if credentials is not None:
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
    proc = subprocess.run([CCBUS, "test", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_rules_see_the_configs_secrets_and_cases_stand_in_their_own(tmp_path: Path) -> None:
    config = project(tmp_path)
    credentials = tmp_path / "credentials"
    write(credentials / "crm-hmac", REAL)
    # the rules directory comes from the config: nothing else is named
    code, out, err = ccbus_test("-c", str(config), "-v", credentials=credentials, cwd=tmp_path)
    assert code == 0, out + err
    assert "2 passed, 0 failed" in out
    assert "PASS" in out and "crm.yaml" in out
    assert "test-hmac" in out  # a stand-in is a test value: shown
    assert REAL not in out + err and "***" in out  # the config's secret is not


def test_without_the_credentials_stand_ins_still_pass(tmp_path: Path) -> None:
    config = project(tmp_path)
    code, out, err = ccbus_test("-c", str(config), credentials=None, cwd=tmp_path)
    assert "the config's secrets are not available here" in err
    assert "CREDENTIALS_DIRECTORY" in err
    assert "PASS " in out and "stood in" in out
    assert "FAIL " in out and "no secret named 'crm-hmac'" in out
    assert "1 passed, 1 failed" in out and code == 1


def test_paths_given_override_the_configs_rules(tmp_path: Path) -> None:
    config = project(tmp_path)
    write(tmp_path / "other" / "r.yaml", """
        rules: [{name: r, on: a, do: [log: "{n}"]}]
        tests: [{name: other, events: [{type: a, data: {n: 1}}], expect: [{log: "1"}]}]
    """)
    code, out, err = ccbus_test(str(tmp_path / "other"), "-c", str(config), credentials=None,
                                cwd=tmp_path)
    assert code == 0, out + err
    assert "1 passed, 0 failed" in out and "crm.yaml" not in out
