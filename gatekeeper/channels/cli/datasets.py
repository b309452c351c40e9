"""`gatekeeper dataset …`: datasets of collected posts, and the filters every channel
selects them with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gatekeeper.channels.cli.context import Context, Group, cli_actor, emit, json_option, pass_ctx
from gatekeeper.domain.filters import Filters

FILTER_HELP = {
    "since": "Posts created at or after (ISO 8601).",
    "until": "Posts created before (ISO 8601).",
    "lang": "Language code, e.g. en, ja.",
    "contains": "Text contains (case-insensitive).",
    "author": "Author username or user ID.",
}


def filter_options(f: Any) -> Any:
    """The dataset filters, the same everywhere (CLI, API, web form)."""
    for name in reversed(FILTER_HELP):
        f = click.option(f"--{name}", name, help=FILTER_HELP[name])(f)
    return f


def filters_of(values: dict[str, Any]) -> Filters:
    return Filters.parse({k: v for k, v in values.items() if k in FILTER_HELP and v is not None})


@click.group(cls=Group)
def dataset() -> None:
    """Datasets of collected posts (JSONL or .jsonl.gz: twarc2 pages, v2 posts, v1.1 tweets)."""


@dataset.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@pass_ctx
def dataset_add(obj: Context, name: str, path: Path, as_json: bool) -> None:
    """Validate PATH whole and register it as dataset NAME."""
    info = obj.gate.datasets.add(name, path, actor=cli_actor(), channel="cli")
    data = info.to_dict()
    emit(obj, data, f"dataset {name}: {data['posts']:,} posts registered")


@dataset.command("remove")
@click.argument("name")
@json_option
@pass_ctx
def dataset_remove(obj: Context, name: str, as_json: bool) -> None:
    """Unregister dataset NAME and delete its file (audited, R11)."""
    info = obj.gate.datasets.remove(name, actor=cli_actor(), channel="cli")
    emit(obj, info.to_dict(), f"dataset {name} removed: {info.posts:,} posts, {info.file} "
                              "deleted")


@dataset.command("list")
@json_option
@pass_ctx
def dataset_list(obj: Context, as_json: bool) -> None:
    """List datasets."""
    rows = [i.to_dict() for i in obj.gate.datasets.list()]
    lines = [f"{r['name']:<24} {r['posts']:>10,} posts  "
             f"{', '.join(r.get('languages') or [])[:40]}" for r in rows]
    emit(obj, rows, "\n".join(lines) or "no datasets")
