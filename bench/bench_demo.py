"""Wall time of each stage of `maelens demo` and the total (issue target: <= 5 min on 2 cores
from a warm set-up).

    python bench/bench_demo.py [--out out/bench-demo]

Runs the demo experiment (the shipped template) with the cache off, so every stage computes.
"""

from __future__ import annotations

import argparse
import shutil
import time

import yaml

from maelens.engine.capture import keep_freed_memory
from maelens.studies.experiment import Experiment
from maelens.studies.run import run_experiment
from maelens.studies.templates import DEMO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench-demo")
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does
    shutil.rmtree(args.out, ignore_errors=True)
    data = yaml.safe_load(DEMO)
    data["run"]["out"] = args.out
    started = time.perf_counter()
    outcome = run_experiment(Experiment.model_validate(data), resume=False, cache=False)
    total = time.perf_counter() - started
    print("maelens demo, stage wall times (s):")
    for stage, seconds in outcome.seconds.items():
        print(f"  {stage:34s} {seconds:7.1f}")
    print(f"  {'total':34s} {total:7.1f}   (target <= 300)")


if __name__ == "__main__":
    main()
