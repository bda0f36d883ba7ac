"""Settings of the modern service, read once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class ModernSettings:
    """What an operator may change; every default is safe on a laptop and matches legacy's."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 20 * MB
    max_pixels: int = 16_000_000  # workloads.DEFAULT_MAX_PIXELS: a worker stays under 1 GB on faces
    var_dir: Path = field(default_factory=lambda: Path(os.environ.get("CUTOVER_VAR", "var")))
    sync_interval: float = 5.0
    sync_enabled: bool = True
    #: Per-kind job timeouts in seconds: explicit, never a silent global default.
    job_timeouts: dict[str, float] = field(
        default_factory=lambda: {"faces": 120.0, "ocr": 300.0, "audio": 120.0, "domains": 300.0}
    )
    job_max_attempts: int = 3
    domain_chunk_chars: int = 1_000_000
    #: Which stack runs each background task; during cutover the plan sets this.
    task_owners: dict[str, str] = field(default_factory=dict)
    shutdown_timeout: float = 10.0

    @property
    def db_path(self) -> Path:
        return self.var_dir / "cutover.db"
