"""The test peers are importable without pytest (issue #20), and the user commands that
start one import them only when they do, saying what to install when they are missing.

Each check runs in a subprocess whose import system refuses pytest (and, for the
user commands, ``ccbus_peers``), as an admin's installation would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent(
    """
    import sys

    REFUSED = set(sys.argv[1].split(","))

    class Missing:
        # Refuse the packages the installation is supposed not to have.
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in REFUSED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    for name in [n for n in sys.modules if n.partition(".")[0] in REFUSED]:
        del sys.modules[name]
    """
)


def run(code: str, refused: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), refused],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize("module", ["ccbus_peers", "ccbus_peers.activemq", "ccbus_peers.kafka"])
def test_the_peers_import_without_pytest(module: str) -> None:
    result = run(f"import {module}; print(sorted(n for n in sys.modules if 'pytest' in n))",
                 "pytest,_pytest")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_require_activemq_imports_pytest_only_when_it_fails() -> None:
    result = run(
        """
        from ccbus_peers import activemq
        activemq.activemq_available = lambda: None
        activemq.require_activemq()
        print("ok")
        """,
        "pytest,_pytest",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_the_genesys_simulator_imports_without_pytest_or_the_peers() -> None:
    result = run(
        """
        import ccbus_genesys, ccbus_genesys.cli, ccbus_genesys.simulator
        print(sorted(n for n in sys.modules if n.partition(".")[0] in {"pytest", "ccbus_peers"}))
        """,
        "pytest,_pytest,ccbus_peers",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_the_genesys_simulator_without_the_peers_says_what_to_install() -> None:
    result = run(
        """
        from ccbus_genesys.cli import simulate_genesys
        simulate_genesys(["--every", "0"], prog_name="ccbus simulate genesys")
        """,
        "pytest,_pytest,ccbus_peers",
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: the Kafka test broker is in ccbus-peers: pip install ccbus-peers "
        "(or give a Kafka broker with --bootstrap)\n"
    )
