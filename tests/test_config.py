"""config.toml: defaults, validation that names the bad key, environment overrides."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper import config
from gatekeeper.rules.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_repository_config_matches_the_defaults_of_the_spec() -> None:
    cfg = config.load(REPO / "config.toml")
    assert cfg.redis.url == "embedded"
    assert cfg.redis.data_dir == REPO / "var"
    assert cfg.limits.post_ids_per_entity == 1_500_000
    assert cfg.limits.post_ids_window_days == 30
    assert cfg.limits.hydrated_per_recipient == 50_000
    assert cfg.limits.hydrated_window == "rolling-24h"
    assert cfg.limits.hydrated_counts_toward_post_ids is True
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8000)
    assert cfg.datasets_dir == REPO / "datasets"
    assert cfg.manifest_retention_days == 90


def test_manifest_retention_is_read_from_its_section(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, "[manifests]\nretention_days = 365\n")
                       ).manifest_retention_days == 365


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[redis]\ndata_dir = "store"\n'))
    assert cfg.redis.data_dir == tmp_path / "store"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[limits]\npost_id_per_entity = 5\n", "unknown key limits.post_id_per_entity"),
        ("[limit]\nx = 1\n", "unknown section [limit]"),
        ('[limits]\npost_ids_per_entity = "many"\n', "limits.post_ids_per_entity must be int"),
        ("[limits]\npost_ids_per_entity = 0\n", "limits.post_ids_per_entity = 0"),
        ("[limits]\nhydrated_per_recipient = -5\n", "limits.hydrated_per_recipient = -5"),
        ("[limits]\npost_ids_window_days = 1.5\n", "limits.post_ids_window_days must be int"),
        ('[limits]\nhydrated_window = "weekly"\n', "limits.hydrated_window = 'weekly'"),
        ('[limits]\ntimezone = "Mars/Olympus"\n', "limits.timezone = 'Mars/Olympus'"),
        ("[redis]\ncluster = 1\n", "redis.cluster must be bool"),
        ("[server]\nport = true\n", "server.port must be int"),
        ('[redis]\nurl = "http://x"\n', "redis.url = 'http://x'"),
        ("[redis\n", "not valid TOML"),
        ("[manifests]\nretention_days = 30\n",
         "manifests.retention_days = 30 must be from 31 to 3650 days"),
        ("[manifests]\nretention_days = 0\n", "manifests.retention_days = 0"),
        ('[manifests]\nretention_days = "90d"\n', "manifests.retention_days must be int"),
        ("[manifests]\nkeep = 90\n", "unknown key manifests.keep"),
    ],
)
def test_a_bad_config_names_the_key_and_value(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text))
    assert names in str(err.value)
    assert "\n" not in str(err.value)


def test_redis_url_from_the_environment_wins(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ENV_REDIS_URL, "redis://127.0.0.1:6390/2")
    assert config.load(write(tmp_path, "")).redis.url == "redis://127.0.0.1:6390/2"
    monkeypatch.setenv(config.ENV_REDIS_URL, "nonsense")
    with pytest.raises(ConfigError, match="GATEKEEPER_REDIS_URL"):
        config.load(write(tmp_path, ""))


def test_config_env_var_picks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[limits]\npost_ids_per_entity = 7\n")
    monkeypatch.setenv(config.ENV_CONFIG, str(path))
    assert config.load().limits.post_ids_per_entity == 7


def test_cli_stops_at_start_up_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nhydrated_per_recipient = 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "--config", str(path), "quota", "entity", "x"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "limits.hydrated_per_recipient = 0" in lines[0]
    assert not (tmp_path / "var").exists()  # nothing was started


def test_readme_documents_every_config_key() -> None:
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"`(\w+\.\w+)`", readme))
    for section, keys in config.SCHEMA.items():
        for key in keys:
            assert f"{section}.{key}" in documented, f"README lacks `{section}.{key}`"
