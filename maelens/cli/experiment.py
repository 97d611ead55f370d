"""`maelens init | run | report | demo`: experiment files, the one-command run, the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from maelens.cli._common import err, friendly, out
from maelens.errors import MaelensError

Resume = Annotated[bool, typer.Option(
    "--resume/--restart", help="continue interrupted stages (finished analyses are reused)")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="recompute everything")]


def register(app: typer.Typer) -> None:
    app.command("init")(friendly(init))
    app.command("run")(friendly(run))
    app.command("report")(friendly(report))
    app.command("demo")(friendly(demo))


def init(
    path: Annotated[Path, typer.Argument(help="experiment file to write")] = Path(
        "experiment.yaml"),
    example: Annotated[str, typer.Option(help="demo | paper-imagenet")] = "demo",
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
) -> None:
    """Write a commented experiment file (every field with its default)."""
    from maelens.atomic import atomic_write
    from maelens.studies.templates import TEMPLATES

    if example not in TEMPLATES:
        raise MaelensError(f"`--example` must be one of {', '.join(TEMPLATES)}, got {example!r}.")
    if path.exists() and not force:
        raise MaelensError(f"{path} exists; pass --force to overwrite it.")
    if path.parent != Path("") and not path.parent.is_dir():
        raise MaelensError(f"folder {path.parent} of {path} does not exist.")
    atomic_write(path, lambda tmp: tmp.write_text(TEMPLATES[example]))
    out.print(f"wrote {path}; edit it, then: maelens run {path}", markup=False,
              highlight=False)


def run(
    experiment: Annotated[Path, typer.Argument(help="experiment YAML (see maelens init)")],
    resume: Resume = True,
    no_cache: NoCache = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="override run.out")] = None,
) -> None:
    """Run an experiment file end to end: results, tables, figures and report.html."""
    from maelens.studies.experiment import load_experiment

    exp = load_experiment(experiment)
    if out_dir is not None:
        exp = exp.model_copy(update={"run": exp.run.model_copy(update={"out": str(out_dir)})})
    _run_and_print(exp, resume, not no_cache)


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("out/demo"),
    resume: Resume = True,
) -> None:
    """The whole pipeline on the shipped demo models, MNIST digits and skimage photos."""
    import yaml

    from maelens.studies.experiment import Experiment
    from maelens.studies.templates import DEMO

    data = yaml.safe_load(DEMO)
    data["run"]["out"] = str(out_dir)
    _run_and_print(Experiment.model_validate(data), resume, True)


def _run_and_print(exp: object, resume: bool, cache: bool) -> None:
    from maelens.engine.distributed import finish, init_from_env
    from maelens.studies.run import run_experiment

    world = init_from_env(exp.run.device)  # type: ignore[attr-defined]
    bar = _StageProgress(world.is_main)
    started = time.perf_counter()
    try:
        outcome = run_experiment(exp, resume=resume, cache=cache,  # type: ignore[arg-type]
                                 progress=bar.update)
    finally:
        bar.close()
    finish(world)
    if not world.is_main:
        return
    for stage, seconds in outcome.seconds.items():
        err.print(f"  {stage:34s} {seconds:7.1f} s", markup=False, highlight=False)
    if outcome.reused:
        err.print(f"  reused {outcome.reused} finished analyses from the cache", markup=False)
    out.print(f"wrote {outcome.results} and {outcome.report} in "
              f"{time.perf_counter() - started:.0f} s", markup=False, highlight=False)


def report(
    results_dir: Annotated[Path, typer.Argument(help="folder holding results.json")],
    screenshot: Annotated[Path | None, typer.Option(
        help="also open the report in headless Chromium and save a PNG screenshot")] = None,
) -> None:
    """Re-render figures, tables and report.html from the results files alone."""
    from maelens.report.build import render_all

    path = render_all(results_dir)
    out.print(f"wrote {path}", markup=False, highlight=False)
    if screenshot is not None:
        from maelens.report.browser import check_report

        check = check_report(path, screenshot)
        out.print(f"Chromium: {check.decoded}/{check.images} images decoded, "
                  f"{len(check.outside_requests)} requests outside the file; wrote {screenshot}",
                  markup=False, highlight=False)


class _StageProgress:
    """One rich progress bar per stage on a terminal; silent otherwise (logs, CI)."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.enabled = enabled and err.is_terminal
        # One bar per stage (images done / images in the stage, rate, ETA) and the elapsed
        # time overall; silent when stderr is not a terminal.
        self.bar = Progress(TextColumn("{task.description:34s}"), BarColumn(),
                            MofNCompleteColumn(), TaskProgressColumn(show_speed=True),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                            disable=not self.enabled)
        self.tasks: dict[str, int] = {}
        if self.enabled:
            self.bar.start()

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done)

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()
