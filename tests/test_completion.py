"""Shell completion as the README documents it, through the real ``ccbus`` entry point.

click produces the scripts; what is tested is that the lines the README gives
for bash, zsh and fish work with the installed command, and that a real bash
completes a command name with them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from support import CCBUS, REPO

#: ``eval "$(_CCBUS_COMPLETE=bash_source ccbus)"`` and its zsh and fish siblings.
DOCUMENTED = re.compile(r"_CCBUS_COMPLETE=(\w+)_source ccbus")


def documented_shells() -> list[str]:
    return DOCUMENTED.findall((REPO / "README.md").read_text(encoding="utf-8"))


def ccbus(env: dict[str, str]) -> str:
    proc = subprocess.run([CCBUS], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_readme_gives_the_line_for_bash_zsh_and_fish() -> None:
    assert sorted(documented_shells()) == ["bash", "fish", "zsh"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_documented_line_produces_a_completion_script(shell: str) -> None:
    assert shell in documented_shells()
    script = ccbus({"_CCBUS_COMPLETE": f"{shell}_source"})
    assert f"_CCBUS_COMPLETE={shell}_complete" in script, script


def test_completing_dead_le_offers_dead_letters() -> None:
    """click's protocol behind the documented bash line: COMP_WORDS and COMP_CWORD in,
    ``type,value`` lines out."""
    assert "bash" in documented_shells()
    answer = ccbus({"_CCBUS_COMPLETE": "bash_complete", "COMP_WORDS": "ccbus dead-le",
                    "COMP_CWORD": "1"})
    assert answer.splitlines() == ["plain,dead-letters"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_with_the_readme_line() -> None:
    """A real bash evaluates the documented line, then asks the completion function."""
    [line] = [ln.split("#")[0].strip() for ln in
              (REPO / "README.md").read_text(encoding="utf-8").splitlines()
              if "_CCBUS_COMPLETE=bash_source" in ln]
    script = f"""
        set -e
        export PATH="{os.path.dirname(CCBUS)}:$PATH"
        {line}
        COMP_WORDS=(ccbus dead-le); COMP_CWORD=1
        _ccbus_completion ccbus
        printf '%s\\n' "${{COMPREPLY[@]}}"
        COMPREPLY=(); COMP_WORDS=(ccbus dead-letters li); COMP_CWORD=2
        _ccbus_completion ccbus
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["dead-letters", "list"], proc.stdout + proc.stderr
