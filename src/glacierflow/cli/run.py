"""``glacierflow run``: every pair of a project, then the annual products and the report."""

from __future__ import annotations

from pathlib import Path

import click

from glacierflow.cli.options import WORKERS


@click.command("run")
@click.argument("project_file", metavar="PROJECT.toml", type=click.Path(path_type=Path))
@click.option("--workers", **WORKERS)
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
    workers: int,
    concurrent_pairs: int | None,
    scheduler: str | None,
    progress: bool | None,
    no_report: bool,
) -> None:
    """Process every pair of a project, then write the annual products and the report.

    The output folder belongs to the project, so run takes no --overwrite: pairs whose products
    are complete and were made with the same settings are kept (an interrupted run resumes);
    pairs whose settings changed are tracked again and replaced; the annual products and the
    report are composed again from the pair products each time. Pairs run one after another,
    N at a time with --concurrent-pairs N (the --workers processes shared out between them), or
    on a Dask cluster with --scheduler ADDRESS. --workers given here wins over the project's
    [matching] workers, which wins over the default.

    \b
    Examples:
      glacierflow run examples/karakoram_1999_2003.toml
      glacierflow run project.toml --concurrent-pairs 4 --workers 8
      glacierflow run project.toml --scheduler tcp://10.0.0.5:8786 --no-report
    """
    from glacierflow.project import load_project, run_project

    source = click.get_current_context().get_parameter_source("workers")
    if source is click.core.ParameterSource.DEFAULT:
        matching = load_project(project_file).track_settings.matching
        if "workers" in matching.model_fields_set:
            workers = None  # the project's own

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
