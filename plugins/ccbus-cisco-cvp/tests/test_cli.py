"""``ccbus simulate cvp`` in an installation without test dependencies (issue #20).

The command is a user command: its module imports neither pytest nor the test
peers (``ccbus-peers``), and ``--start-broker`` without them stops with one
line saying what to install.  Run in a subprocess whose import system refuses
those packages, as an admin's installation would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import sys

    class Missing:
        # Refuse the test-only packages, as an installation without them would.
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"pytest", "_pytest", "ccbus_peers"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    for name in [n for n in sys.modules if n.partition(".")[0] in {"pytest", "_pytest"}]:
        del sys.modules[name]
    """
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_the_cli_module_imports_without_pytest_or_the_test_peers() -> None:
    result = run(
        """
        import ccbus_cisco_cvp, ccbus_cisco_cvp.cli, ccbus_cisco_cvp.simulator
        bad = sorted(n for n in sys.modules if n.partition(".")[0] in {"pytest", "ccbus_peers"})
        print("loaded:", bad)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "loaded: []\n"


def test_start_broker_without_the_test_peers_says_what_to_install() -> None:
    result = run(
        """
        from ccbus_cisco_cvp.cli import simulate_cvp
        simulate_cvp(["--start-broker", "--every", "0"], prog_name="ccbus simulate cvp")
        """
    )
    assert result.returncode == 1
    assert result.stderr == "Error: --start-broker needs the test peers: pip install ccbus-peers\n"
    assert result.stdout == ""
