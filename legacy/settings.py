"""Settings of the legacy service, read once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class LegacySettings:
    """What an operator may change; every default is safe on a laptop."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 20 * MB
    max_pixels: int = 16_000_000  # workloads.DEFAULT_MAX_PIXELS: a worker stays under 1 GB on faces
    var_dir: Path = field(default_factory=lambda: Path(os.environ.get("CUTOVER_VAR", "var")))
    sync_interval: float = 5.0
    sync_enabled: bool = True
    job_timeout: float = 300.0
    domain_chunk_chars: int = 1_000_000
    #: Which stack runs each background task; during cutover the plan sets this.
    task_owners: dict[str, str] = field(default_factory=dict)

    @property
    def inbox(self) -> Path:
        return self.var_dir / "inbox"

    @property
    def outbox(self) -> Path:
        return self.var_dir / "outbox"

    @property
    def done(self) -> Path:
        return self.var_dir / "done"

    @property
    def failed(self) -> Path:
        return self.var_dir / "failed"
