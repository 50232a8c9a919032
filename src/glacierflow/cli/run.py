"""``glacierflow run``: every pair of a project, then the annual products and the report."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run")
@click.argument("project_file", metavar="PROJECT.toml", type=click.Path(path_type=Path))
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="Processes used for matching [default: the project's, else 1; with "
    "--concurrent-pairs, the number of CPUs, shared out between the pairs running at once].",
)
@click.option(
    "--concurrent-pairs",
    default=None,
    type=click.IntRange(min=1),
    metavar="N",
    help="Pairs processed at once on local worker processes [default: the project's "
    "[matching] concurrent_pairs, else 1]. The products are the same as one pair at a time.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    envvar="DASK_SCHEDULER_ADDRESS",
    help="Address of a running dask.distributed scheduler: every pair is one task on its "
    "workers, which must see the scenes and the output folder at the same paths "
    "[default: DASK_SCHEDULER_ADDRESS].",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars over the pairs and each pair's nodes (default: when stderr is a terminal).",
)
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
def command(
    project_file: Path,
    workers: int | None,
    concurrent_pairs: int | None,
    scheduler: str | None,
    progress: bool | None,
    no_report: bool,
) -> None:
    """Process every pair of a project, then write the annual products and the report.

    Pairs whose products are already complete are kept, so an interrupted run resumes. Pairs
    run one after another, N at a time with --concurrent-pairs N, or on a Dask cluster with
    --scheduler ADDRESS; the annual products are composed once every pair is done.

    \b
    Example:
      glacierflow run yahtse.toml --concurrent-pairs 4
    """
    from glacierflow.project import run_project

    result = run_project(
        project_file,
        workers=workers,
        concurrent_pairs=concurrent_pairs,
        scheduler=scheduler,
        report=not no_report,
        progress=progress,
        echo=click.echo,
    )
    click.echo(
        f"done: {len(result.processed)} pair(s) tracked, {len(result.skipped)} kept; "
        f"{len(result.annual_paths)} annual product(s) in {result.project.output}"
    )
