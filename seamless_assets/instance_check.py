"""What `seamless doctor` checks in the Dagster instance's `dagster.yaml`.

dagster-postgres writes events with `NOTIFY run_events, <param>`. SQLAlchemy picks the
driver from the URL: `postgresql+psycopg2://` is psycopg2 (what dagster-postgres is
written for); a bare `postgresql://` or `postgres://` picks psycopg 3 when it is installed
(it is: the QuestDB hot store uses it), which sends the parameter server-side and Postgres
rejects `NOTIFY … $1`: every event write of every run fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

SUPPORTED_SCHEME = "postgresql+psycopg2"
_STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")


def _value(setting: Any) -> str:
    """A dagster.yaml string setting: literal or `{env: NAME}` (read from this process)."""
    if isinstance(setting, dict) and "env" in setting:
        return os.environ.get(str(setting["env"]), "")
    return setting if isinstance(setting, str) else ""


def _postgres_configs(instance: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """`(where, postgres config)` of every Postgres storage section of the instance."""
    found = []
    for key in _STORAGE_KEYS:
        section = instance.get(key)
        if not isinstance(section, dict):
            continue
        if isinstance(section.get("postgres"), dict):
            found.append((f"{key}.postgres", section["postgres"]))
        module = str(section.get("module", ""))
        if module.startswith("dagster_postgres") and isinstance(section.get("config"), dict):
            found.append((f"{key}.config", section["config"]))
    return found


def _scheme_problem(where: str, scheme: str, source: str) -> str:
    return (
        f"{where}: {source} uses the scheme {scheme!r}, with which SQLAlchemy drives "
        "Postgres through psycopg 3 and dagster-postgres' NOTIFY fails on every event write; "
        f"use {SUPPORTED_SCHEME}://USER:PASSWORD@HOST:5432/DB (postgres_db: scheme: "
        f"{SUPPORTED_SCHEME})"
    )


def postgres_storage_problems(dagster_yaml: Path) -> list[str]:
    """One message per Postgres storage setting that would break event writes; [] when
    the instance has no Postgres storage or it is set up right."""
    if not dagster_yaml.is_file():
        return []
    try:
        instance = yaml.safe_load(dagster_yaml.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        return [f"{dagster_yaml}: not valid YAML ({exc})"]
    if not isinstance(instance, dict):
        return [f"{dagster_yaml}: not a mapping"]
    problems = []
    for where, config in _postgres_configs(instance):
        if "postgres_url" in config:
            url = _value(config["postgres_url"])
            source = "postgres_url"
            if isinstance(config["postgres_url"], dict):
                source = f"postgres_url (${config['postgres_url'].get('env')})"
            if not url:
                problems.append(
                    f"{where}: {source} is empty; set it to a {SUPPORTED_SCHEME}:// URL"
                )
                continue
            scheme = urlsplit(url).scheme
            if scheme != SUPPORTED_SCHEME:
                problems.append(_scheme_problem(where, scheme, source))
        elif isinstance(config.get("postgres_db"), dict):
            scheme = _value(config["postgres_db"].get("scheme", "postgresql")) or "postgresql"
            if scheme != SUPPORTED_SCHEME:
                problems.append(_scheme_problem(where, scheme, "postgres_db.scheme"))
    if problems:
        return [f"{dagster_yaml}: {p}" for p in problems]
    return []
