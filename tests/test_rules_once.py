"""Each rule decided once (issue 11): R4's period and input, R12's roles, R5's refusal and the
refused outcomes each have one definition, and the rules, exports and channels keep to their
side of the one-way doors (STYLE.md habit 11; `lint-imports` checks the same in CI)."""

from __future__ import annotations

import ast
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis

from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules import outcomes, permissions, policy, roles
from gatekeeper.rules.errors import AutomatedHydratedForbidden, BadInput, Forbidden
from gatekeeper.rules.limits import Counter, Limit, Window

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "gatekeeper" / "ledger" / "lua"
T0 = 1_700_000_000_000
FROM, UNTIL = T0 + 60_000, T0 + 120_000


@pytest.mark.parametrize("at", [FROM - 1, FROM, FROM + 1, UNTIL - 1, UNTIL, UNTIL + 1])
def test_the_ledger_applies_a_permission_exactly_when_in_force_says_it_holds(
        redis_client: redis.Redis, at: int) -> None:
    """_window.lua mirrors permissions.in_force: the permission's limit from its recording
    (inclusive) to its end (exclusive), R2's limit either side."""
    counter = Counter("gk:{e:acme}:ctr:r2:acme", "R2", Window("1h", 3_600_000, 60_000),
                      Limit(100, 500, FROM, UNTIL))
    _, [state] = Ledger(redis_client).peek([counter], now_ms=at)
    assert state.limit == (500 if permissions.in_force(FROM, UNTIL, at) else 100)
    assert permissions.in_force(FROM, UNTIL, at) == (FROM <= at < UNTIL)


def test_refused_outcomes_are_the_ones_the_scripts_index() -> None:
    table = re.search(r"local REFUSED = \{([^}]*)\}", (LUA / "_window.lua").read_text())
    assert table is not None
    lua = {name for name, value in re.findall(r"(\w+) = (\w+)", table[1]) if value == "true"}
    assert lua == set(outcomes.REFUSED)
    assert set(outcomes.REFUSED) <= set(outcomes.OUTCOMES)


@pytest.mark.parametrize(("typed", "limit"), [
    ("1500000", 1_500_000), ("1,500,000", 1_500_000), ("1_500_000", 1_500_000),
    ("1 500 000", 1_500_000), (" unlimited ", None), ("Unlimited", None)])
def test_a_typed_permission_limit_is_read_one_way(typed: str, limit: int | None) -> None:
    assert permissions.parse_limit(typed) == limit


@pytest.mark.parametrize("typed", ["lots", "0", "-5", "+5", "1.5", "", str(2**53),
                                   "9" * 17])
def test_a_bad_permission_limit_is_refused_naming_r4_and_the_field(typed: str) -> None:
    with pytest.raises(BadInput) as refused:
        permissions.parse_limit(typed)
    assert refused.value.rule == "R4" and refused.value.details["field"] == "limit"
    assert "positive number" in refused.value.message


@pytest.mark.parametrize("limit", [None, 1, 1_500_000, permissions.MAX_LIMIT])
def test_a_permission_limit_is_stored_and_shown_one_way_and_read_back(limit: int | None) -> None:
    assert permissions.read_stored(permissions.stored(limit)) == limit
    assert permissions.read_stored(permissions.shown(limit)) == limit
    assert permissions.parse_limit(permissions.shown(limit)) == limit


def test_a_permission_holds_through_its_last_day_in_the_zone() -> None:
    permit = permissions.parse("10", "2026-03-31", "X-1", timezone="Europe/Berlin",
                               now_ms=T0)
    # The end of 31 March in Berlin (summer time from 29 March): 2026-04-01T00:00+02:00.
    assert permit.until_ms == int(datetime(2026, 4, 1, tzinfo=ZoneInfo("Europe/Berlin"))
                                  .timestamp() * 1000) == 1_774_994_400_000
    with pytest.raises(BadInput, match="already over"):
        permissions.parse("10", "2026-03-31", "X-1", timezone="Europe/Berlin",
                          now_ms=permit.until_ms)
    with pytest.raises(BadInput, match="YYYY-MM-DD"):
        permissions.parse("10", "9999-12-31", "X-1", timezone="UTC", now_ms=T0)
    with pytest.raises(BadInput, match="reference"):
        permissions.parse("10", "2026-03-31", "  ", timezone="UTC", now_ms=T0)


class _User:
    def __init__(self, role: str) -> None:
        self.name, self.entity, self.root, self.role = f"u-{role}", "acme", "acme", role
        self.accepted_terms = True


@pytest.mark.parametrize("role", roles.ROLES)
def test_every_role_check_answers_from_one_table(role: str) -> None:
    user = _User(role)
    for allowed in (roles.MAY_SHARE_IDS, roles.MAY_EXPORT_HYDRATED, roles.MAY_ADMINISTER,
                    roles.MAY_RECORD_COMPLIANCE, roles.MAY_READ_QUOTAS):
        assert roles.allows(user, allowed) == (role in allowed)
        if role in allowed:
            roles.require_role(user, allowed, "it")
        else:
            with pytest.raises(Forbidden, match=f"has role '{role}'; it needs role"):
                roles.require_role(user, allowed, "it")


def test_the_r5_refusal_is_written_once() -> None:
    with pytest.raises(AutomatedHydratedForbidden) as refused:
        policy.check_hydrated_channel("cli")
    assert refused.value.message == policy.automated_hydrated().message
    sources = "".join(p.read_text() for p in (ROOT / "gatekeeper").rglob("*.py"))
    assert sources.count("may leave only as a file") == 1


def test_the_refused_outcomes_are_listed_once() -> None:
    pattern = re.compile(r"""["']refused["'],\s*["']denied["'],\s*["']conflict["']""")
    found = [p.relative_to(ROOT).as_posix() for p in (ROOT / "gatekeeper").rglob("*.py")
             if pattern.search(p.read_text())]
    assert found == ["gatekeeper/rules/outcomes.py"]


def _imports(package: Path) -> dict[str, set[str]]:
    """Every module of `package` with the modules it imports (at any depth, TYPE_CHECKING
    blocks included)."""
    out: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        out[path.relative_to(ROOT).as_posix()] = names
    return out


def test_the_rules_import_nothing_of_the_ledger_the_domain_or_the_channels() -> None:
    lower = ("gatekeeper.ledger", "gatekeeper.domain", "gatekeeper.channels")
    leaks = {module: sorted(n for n in names if n.startswith(lower))
             for module, names in _imports(ROOT / "gatekeeper" / "rules").items()}
    assert {m: n for m, n in leaks.items() if n} == {}


def test_exports_import_nothing_of_gatekeeper() -> None:
    leaks = {module: sorted(n for n in names if n.split(".")[0] == "gatekeeper")
             for module, names in _imports(ROOT / "exports").items()}
    assert {m: n for m, n in leaks.items() if n} == {}


def test_the_ledger_imports_nothing_of_the_domain_or_the_channels() -> None:
    upper = ("gatekeeper.domain", "gatekeeper.channels")
    leaks = {module: sorted(n for n in names if n.startswith(upper))
             for module, names in _imports(ROOT / "gatekeeper" / "ledger").items()}
    assert {m: n for m, n in leaks.items() if n} == {}
