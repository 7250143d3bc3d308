"""CPU instructions per record, counted by valgrind: a figure the host's speed cannot move.

This machine's speed swings from minute to minute (see ``bench/README.md``), so a
wall-clock comparison of two versions of the code needs alternating runs and
still leaves doubt.  Valgrind's ``callgrind`` tool counts the instructions a
process executes, and the count hardly changes from run to run.  This script
runs one workload under it twice, with ``--small`` and ``--large`` records, and
reports ``(instructions(large) - instructions(small)) / (large - small)``: the
cost of one more record, with start-up and imports cancelled out.

Workloads (the same code paths as the benchmarks of the same name):

* ``genesys``: the ``ccbus`` half of ``genesys_bench.py``: records produced to
  the Kafka test peer (started outside valgrind, so only ccbus is counted),
  consumed by the ``genesys`` source through a real ``Bus`` and the benchmark's
  rule;
* ``bus``: the ``bus alone`` half: the same records' events mapped beforehand,
  published straight into ``Bus.publish``.

    .venv/bin/python bench/instructions.py [genesys|bus] [--small 1000] [--large 5000]

Needs ``valgrind`` (Debian package ``valgrind``).  Expect about a minute per
workload.  Compare two commits by running this script in each checkout; the
figures of the same code agree to a few hundred instructions per record.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent


def count_instructions(workload: str, records: int) -> int:
    """Run the workload once under callgrind and return the instructions it executed."""
    broker = None
    extra: list[str] = []
    if workload == "genesys":
        from genesys_bench import populate, start_broker

        broker, bootstrap = start_broker()
        anyio.run(populate, bootstrap, records)
        extra = ["--bootstrap", bootstrap]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            completed = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
                 sys.executable, str(Path(__file__)), workload, "--child",
                 "--records", str(records), "--workdir", tmp, *extra],
                capture_output=True, text=True, check=False,
            )
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    found = re.search(r"Collected : (\d+)", completed.stderr)
    if completed.returncode != 0 or found is None:
        raise SystemExit(f"the {workload} run under valgrind failed:\n{completed.stderr[-3000:]}")
    return int(found.group(1))


async def child(workload: str, records: int, workdir: Path, bootstrap: str | None) -> None:
    """The measured process: one run of the workload, nothing else."""
    from genesys_bench import bus_alone_run, ccbus_run

    if workload == "genesys":
        assert bootstrap is not None
        await ccbus_run(bootstrap, records, workdir / "run")
    else:
        await bus_alone_run(records, workdir / "run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["genesys", "bus"])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=5_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        anyio.run(child, args.workload, args.records, args.workdir, args.bootstrap)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    small = count_instructions(args.workload, args.small)
    large = count_instructions(args.workload, args.large)
    per_record = (large - small) / (args.large - args.small)
    print(f"{args.workload}: {small:,} instructions at {args.small:,} records, "
          f"{large:,} at {args.large:,}")
    print(f"{args.workload}: {per_record:,.0f} instructions per record")


if __name__ == "__main__":
    main()
