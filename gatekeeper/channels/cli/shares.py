"""`gatekeeper share`: IDs shared with an entity, checked (R8), counted (R2), R9-filtered."""

from __future__ import annotations

from pathlib import Path

import click

from gatekeeper.channels.cli.context import Context, emit, json_option, pass_ctx
from gatekeeper.channels.cli.datasets import filter_options, filters_of
from gatekeeper.channels.cli.tables import meter, plural, size_of
from gatekeeper.domain import shares
from gatekeeper.rules import policy
from gatekeeper.rules.errors import BadInput


@click.command("share")
@click.option("--as", "actor", required=True, help="The data-team user sharing.")
@click.option("--entity", "entity_name", required=True, help="The recipient entity.")
@click.option("--ids", "ids_path", type=click.Path(path_type=Path),
              help="ID file to share: one decimal ID per line.")
@click.option("--dataset", help="Dataset to dehydrate (see `dataset list`).")
@filter_options
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--kind", type=click.Choice(policy.SHARE_KINDS), default="posts", show_default=True,
              help="Post IDs, or the distinct author User IDs of a dataset selection.")
@click.option("--allow-partial", is_flag=True,
              help="If the whole does not fit, deliver exactly the remaining allowance.")
@click.option("--purpose", help="Why the IDs are shared (recorded, R10).")
@click.option("--idempotency-key", help="A retry with the same key is counted once.")
@json_option
@pass_ctx
def share(obj: Context, actor: str, entity_name: str, ids_path: Path | None,
          dataset: str | None, out: Path, kind: str, allow_partial: bool, purpose: str | None,
          idempotency_key: str | None, as_json: bool, **filter_values: str | None) -> None:
    """Share IDs with an entity: checked (R8), counted (R2), R9-filtered, written to --out."""
    if (ids_path is None) == (dataset is None):
        raise BadInput("give exactly one of --ids FILE or --dataset NAME")
    filters = filters_of(filter_values)
    if ids_path is not None and not filters.is_empty:
        raise BadInput("filters apply to --dataset, not to an --ids file")
    # A bar while the input is read (what takes the time of a large share): an ID file's
    # bytes, or a running count of a dataset's posts read (how many match is not known).
    shown = (f"reading {ids_path.name}", size_of(ids_path)) if ids_path is not None else (
        f"reading dataset {dataset}: {'authors' if kind == 'users' else 'posts'}", None)
    with meter(*shown) as advance:
        r = shares.share_to_file(obj.gate, actor=actor, entity=entity_name, out=out, kind=kind,
                                 ids_path=ids_path, dataset=dataset, filters=filters,
                                 allow_partial=allow_partial, purpose=purpose,
                                 idempotency_key=idempotency_key, channel="cli",
                                 progress=advance)
    data = {**r.to_dict(), "out": str(out), "repeats": r.audit.get("repeats") or 0}
    q = data["quota"]
    what = "Post ID" if kind == "posts" else "User ID"
    head = {"granted": "granted", "partial": "PARTIAL: granted", "replay":
            "already shared (same idempotency key, counted once):"}[r.grant.status]
    if q["limit"] is None:  # say "unlimited" once, and why (R2 records User IDs, R3, R4)
        why = ("User IDs are recorded, not capped" if kind == "users"
               else f"unlimited in the {q['window']} window")
        used = f"used {q['used']:,} ({why})"
    else:
        used = (f"used {q['used']:,} of {q['limit']:,}, {q['remaining']:,} remaining in the "
                f"{q['window']} window")
    text = (f"{head} {r.grant.granted:,} of {plural(r.grant.requested, what)} to {entity_name} "
            f"-> {out}\nshare {r.grant.share_id}; {q['rule']}: {used}")
    if r.removed:
        text += f"\nR9: {plural(r.removed, 'deleted/withheld ID')} {_were(r.removed)} left out"
    if data["repeats"]:
        text += (f"\n{plural(data['repeats'], 'repeated ID')} {_were(data['repeats'])} left "
                 "out (each ID is delivered and counted once)")
    emit(obj, data, text)


def _were(n: int) -> str:
    return "was" if n == 1 else "were"
