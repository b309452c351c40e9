"""What is allowed: rules R1-R8, as plain Python with no I/O (roles: `rules.roles`).

The ledger counts; this module decides which counters a request charges and under which
limit, and refuses what no quota could ever allow. Each rule is decided here and only here.
"""

from __future__ import annotations

from gatekeeper.config import LimitsConfig
from gatekeeper.rules.errors import AutomatedHydratedForbidden, BadInput, Forbidden
from gatekeeper.rules.limits import Charge, Limit, hydrated_window, post_id_window
from gatekeeper.rules.roles import MAY_EXPORT_HYDRATED, MAY_SHARE_IDS, require_role
from gatekeeper.rules.subjects import Person as User
from gatekeeper.rules.subjects import Recipient as Entity

KINDS = ("commercial", "academic")
SHARE_KINDS = ("posts", "users")
CHANNELS = ("web", "api", "cli")

# R8: what a recipient attests to before receiving anything.
TERMS = (
    "X Terms of Service",
    "X Privacy Policy",
    "X Developer Agreement",
    "X Developer Policy",
)
TERMS_VERSION = "2026-11"  # the versions in force when this attestation text was written

# A share's purpose is copied into its audit records (R11) and the report: a sentence or a
# paragraph, never a file.
MAX_PURPOSE = 1000


def exempt(entity: Entity) -> bool:
    """R3: academic and non-commercial research, both recorded (with who and when)."""
    return entity.kind == "academic" and entity.research and entity.research_recorded_by is not None


def check_id_share(actor: User, entity: Entity) -> None:
    """May `actor` share ID files with `entity`? (R12 role, R8 recipient's attestation.)"""
    require_role(actor, MAY_SHARE_IDS, "sharing ID files")
    if entity.terms is None:
        raise Forbidden(
            f"R8: entity {entity.name!r} has not attested to X's Terms of Service, Privacy "
            f"Policy, Developer Agreement and Developer Policy; record it with "
            f"`gatekeeper entity accept-terms {entity.name} --by PERSON` before sharing",
            rule="R8",
        )


def check_purpose(purpose: object) -> None:
    """The purpose of a share, from any channel: none, or text of at most MAX_PURPOSE."""
    if purpose is None or (isinstance(purpose, str) and len(purpose) <= MAX_PURPOSE):
        return
    json_types = {"dict": "an object", "list": "an array", "bool": "true or false"}
    shown = f"{len(purpose):,} characters" if isinstance(purpose, str) else \
        json_types.get(type(purpose).__name__, "a number")
    raise BadInput(f"purpose must be text of at most {MAX_PURPOSE:,} characters, not {shown}",
                   field="purpose")


def check_hydrated_export(user: User, channel: str) -> None:
    """May `user` receive hydrated posts now? (R5 channel, R12 role, R8 user's attestation.)"""
    check_hydrated_channel(channel)
    require_role(user, MAY_EXPORT_HYDRATED, "exporting hydrated posts")
    if not user.accepted_terms:
        raise Forbidden(
            f"R8: {user.name} has not accepted X's Terms of Service, Privacy Policy, Developer "
            "Agreement and Developer Policy; accept them on the terms page before exporting",
            rule="R8",
        )


def export_charges(user: User, entity: Entity, root: Entity, posts: int, users: int,
                   cfg: LimitsConfig) -> list[Charge]:
    """What a hydrated export charges: the recipient's R6 counter (posts and User objects),
    and — with limits.hydrated_counts_toward_post_ids — the entity's R2 Post ID counters."""
    charges = [hydrated_charge(user, posts + users, cfg)]
    if cfg.hydrated_counts_toward_post_ids:
        charges += id_share_charges(entity, root, "posts", posts, cfg)
    return charges


def check_hydrated_channel(channel: str) -> None:
    """R1/R5: hydrated content leaves only through a person clicking export in the web form."""
    if channel != "web":
        raise automated_hydrated()


def automated_hydrated() -> AutomatedHydratedForbidden:
    """R5's refusal of hydrated content asked for by an automated channel (API token, CLI)."""
    return AutomatedHydratedForbidden(
        "R5: hydrated posts and users may leave only as a file a person downloads from the "
        "export form; automated channels (API token, CLI) may share IDs only (R1)")


def post_id_limit(entity: Entity, cfg: LimitsConfig) -> Limit:
    """R2's limit for an entity, lifted by R3 (exemption) or replaced by R4 (permission)."""
    base = None if exempt(entity) else cfg.post_ids_per_entity
    p = entity.permission
    if p is None:
        return Limit(base)
    return Limit(base, p.limit, p.valid_from_ms, p.valid_until_ms)


def hydrated_limit(cfg: LimitsConfig) -> Limit:
    """R6's limit per recipient; no exemption or permission lifts it (R3 never lifts R6)."""
    return Limit(cfg.hydrated_per_recipient)


def id_share_charges(
    entity: Entity, root: Entity, kind: str, amount: int, cfg: LimitsConfig
) -> list[Charge]:
    """The counters an ID share to `entity` charges.

    Post IDs count against the pool (the root entity with all linked children, R10) under the
    root's limit, and — for a child — also against the child's own limit. User IDs are recorded
    but not capped (R2).
    """
    window = post_id_window(cfg)
    if kind == "users":
        return [Charge(root.name, "uid", entity.name, "R2", window, Limit(None), amount)]
    charges = [Charge(root.name, "r2", root.name, "R2", window, post_id_limit(root, cfg),
                      amount)]
    if entity.name != root.name:
        charges.append(Charge(root.name, "r2", entity.name, "R2", window,
                              post_id_limit(entity, cfg), amount))
    return charges


def hydrated_charge(user: User, amount: int, cfg: LimitsConfig) -> Charge:
    """The R6 counter of one recipient."""
    return Charge(user.root, "r6", user.name, "R6", hydrated_window(cfg), hydrated_limit(cfg),
                  amount)
