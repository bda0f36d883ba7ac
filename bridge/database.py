"""Where cutover's durable state lives: ``CUTOVER_DATABASE``, its URL forms, and the store for jobs.

One process on one machine keeps the embedded default, a SQLite file under
``var/``. Several replicas share one PostgreSQL database::

    CUTOVER_DATABASE=sqlite:///var/cutover.db          # the default (relative path)
    CUTOVER_DATABASE=sqlite:////srv/app/cutover.db     # an absolute path
    CUTOVER_DATABASE=postgresql://user@db-host:5432/app

:func:`open_job_store` gives the job store for either one, with the same API,
so an app opens its store one way whatever the engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

__all__ = ["DATABASE_ENV", "DatabaseURL", "database_url", "fleet_lease", "open_job_store", "parse_database_url"]

DATABASE_ENV = "CUTOVER_DATABASE"


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL: ``engine`` and, for SQLite, ``path``; for PostgreSQL, ``dsn``."""

    engine: Literal["sqlite", "postgresql"]
    path: Path | None = None
    dsn: str | None = None

    def __str__(self) -> str:
        if self.engine == "sqlite":
            return f"sqlite:///{self.path}"
        return _redacted(self.dsn or "")


def parse_database_url(text: str) -> DatabaseURL:
    """Parse ``sqlite:///path`` or ``postgresql://...`` (``postgres://`` too).

    :raises ValueError: on anything else, saying which forms are accepted.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the database URL is empty: use sqlite:///path or postgresql://user@host/db")
    text = text.strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme == "sqlite":
        if not text.lower().startswith("sqlite:///") or len(text) == len("sqlite:///"):
            raise ValueError(f"invalid SQLite URL {text!r}: use sqlite:///relative/path or sqlite:////absolute/path")
        return DatabaseURL("sqlite", path=Path(unquote(text[len("sqlite:///"):])))
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(text)
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError(f"invalid PostgreSQL URL {_redacted(text)!r}: it names no host "
                             "(postgresql://user@host:5432/dbname, or ?host=/socket/dir)")
        try:
            parts.port  # noqa: B018  (a port that is not a number raises here)
        except ValueError as exc:
            raise ValueError(f"invalid PostgreSQL URL {_redacted(text)!r}: {exc}") from None
        return DatabaseURL("postgresql", dsn="postgresql" + text[len(scheme):])
    raise ValueError(f"unsupported database URL {_redacted(text)!r}: use sqlite:///path or postgresql://user@host/db")


def database_url(default_path: str | os.PathLike[str], env: dict[str, str] | None = None) -> DatabaseURL:
    """``CUTOVER_DATABASE`` if set, else the SQLite file ``default_path``."""
    value = (os.environ if env is None else env).get(DATABASE_ENV, "").strip()
    if not value:
        return DatabaseURL("sqlite", path=Path(default_path))
    try:
        return parse_database_url(value)
    except ValueError as exc:
        raise ValueError(f"{DATABASE_ENV}: {exc}") from None


def open_job_store(url: DatabaseURL | str | os.PathLike[str], **options: Any) -> Any:
    """The job store for ``url`` (not yet open: ``async with`` it).

    A path or ``sqlite:///`` URL gives :class:`bridge.jobs.JobStore`; a
    ``postgresql://`` URL gives :class:`bridge.jobstore_pg.PostgresJobStore`,
    which needs the ``postgres`` extra (``pip install twisted-cutover[postgres]``).
    ``options`` go to the store (``on_submit``; for PostgreSQL ``lease_ttl``).
    """
    if isinstance(url, str):
        url = parse_database_url(url) if "://" in url else DatabaseURL("sqlite", path=Path(url))
    elif not isinstance(url, DatabaseURL):
        url = DatabaseURL("sqlite", path=Path(url))
    if url.engine == "sqlite":
        from .jobstore import JobStore

        return JobStore(url.path or Path("var/cutover.db"), **options)
    from .jobstore_pg import PostgresJobStore

    return PostgresJobStore(url.dsn or "", **options)


def fleet_lease(name: str, *, every: float, env: dict[str, str] | None = None) -> Any:
    """The fleet-wide lease for the periodic task ``name`` when ``CUTOVER_DATABASE`` is PostgreSQL, else None.

    With one SQLite file there is one machine, and a task's ``flock`` lease
    already excludes its processes. With PostgreSQL there may be several
    replicas: a :class:`bridge.fleet.FleetLease` keeps the task on one of them,
    and hands it over when that one stops renewing. Its ttl is three of the
    task's intervals (at least 10 s), so the holder never loses it between two
    of its own rounds.
    """
    url = database_url("var/cutover.db", env)
    if url.engine != "postgresql":
        return None
    from .fleet import FleetLease

    return FleetLease(url.dsn or "", name, ttl=max(3 * every, 10.0))


def _redacted(dsn: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
