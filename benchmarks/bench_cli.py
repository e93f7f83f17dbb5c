"""Start-up time of the ``fedaegis`` CLI against a bare Python interpreter, measured in the same run.

``fedaegis --help`` and ``fedaegis runs`` must not import torch, Opacus, MONAI, Ray or Flower:
the ratios below show what the CLI costs on top of starting Python, and what importing the
heavy libraries would add (``import torch`` timed in the same interleaved loop).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-c", "from fedaegis.orchestration.cli import main; main()"]
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FEDAEGIS_HOME": home}
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "fedaegis --help": [*cli, "--help"],
            "fedaegis runs": [*cli, "runs"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # interleaved: load from other processes hits all alike
            for name, cmd in commands.items():
                times[name].append(_time(cmd, env))
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{'command':32} {'median s':>9} {'x baseline':>11}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32} {median:9.3f} {median / base:11.1f}")


if __name__ == "__main__":
    main()
