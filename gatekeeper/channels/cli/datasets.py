"""`gatekeeper dataset …`: datasets of collected posts, and the filters every channel
selects them with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gatekeeper.channels.cli.context import Context, Group, cli_actor, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import meter, plural, size_of, table
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.salvage import Skipped, words

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
@click.option("--skip-bad-lines", is_flag=True,
              help="Keep every complete post of a file whose collection was interrupted: "
                   "leave out (and list) each line that does not parse, e.g. one cut off.")
@json_option
@pass_ctx
def dataset_add(obj: Context, name: str, path: Path, skip_bad_lines: bool,
                as_json: bool) -> None:
    """Validate PATH whole and register it as dataset NAME."""
    skipped = Skipped() if skip_bad_lines else None
    with meter(f"checking {path.name}", size_of(path)) as advance:
        info = obj.gate.datasets.add(name, path, actor=cli_actor(), channel="cli",
                                     skipped=skipped, progress=advance)
    data = info.to_dict()
    text = f"dataset {name}: {plural(data['posts'], 'post')} registered"
    if skipped is not None:
        data["skipped"] = skipped.lines  # the first MAX_LISTED; skipped_lines counts them all
        text += f"\n{words(skipped.count)}" + (":" if skipped.count else "")
        text += "".join(f"\n  line {s['line']:,}: {s['reason']}" for s in skipped.lines)
        if skipped.count > len(skipped.lines):
            text += f"\n  … and {skipped.count - len(skipped.lines):,} more (not listed)"
    emit(obj, data, text)


@dataset.command("remove")
@click.argument("name")
@json_option
@pass_ctx
def dataset_remove(obj: Context, name: str, as_json: bool) -> None:
    """Unregister dataset NAME and delete its file (audited, R11)."""
    info = obj.gate.datasets.remove(name, actor=cli_actor(), channel="cli")
    emit(obj, info.to_dict(), f"dataset {name} removed: {plural(info.posts, 'post')}, "
                              f"{info.file} deleted")


@dataset.command("list")
@json_option
@pass_ctx
def dataset_list(obj: Context, as_json: bool) -> None:
    """List datasets."""
    rows = [i.to_dict() for i in obj.gate.datasets.list()]
    emit(obj, rows, table(
        ["NAME", "POSTS", "LANGUAGES", "SKIPPED"],
        [[r["name"], r["posts"], ", ".join(r.get("languages") or [])[:40] or None,
          plural(r["skipped_lines"], "bad line") if r["skipped_lines"] else None]
         for r in rows],
        right=["POSTS"], empty="no datasets"))


@dataset.command("show")
@click.argument("name")
@json_option
@pass_ctx
def dataset_show(obj: Context, name: str, as_json: bool) -> None:
    """Show what was recorded about dataset NAME when it was added."""
    data = obj.gate.datasets.info(name).to_dict()
    emit(obj, data, "\n".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}"
                               for k, v in data.items()))
