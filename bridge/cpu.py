"""How many CPUs may this process actually use?

``os.cpu_count()`` answers for the host, not for us. A container limited to
1.5 CPUs on a 64-core machine that starts 64 workers thrashes its CFS quota
and runs slower than with two. So we take the tightest of every limit the
kernel would enforce:

* the cgroup v2 ``cpu.max`` quota, and the v1 ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us`` pair, at our cgroup *and every parent* up to the mount
  point, because a tighter parent caps its children (loky #634, golang/go
  #81180);
* the cpuset (v2 ``cpuset.cpus.effective``, v1 ``cpuset.cpus``);
* the scheduler affinity mask (or the host count when reading a fixture tree);
* and ``CUTOVER_CPUS``, which overrides all of them.

Fractional quotas round up (1.5 CPUs -> 2 workers): a worker left idle by the
quota costs little, a CPU left unused costs throughput. A malformed cgroup file
is skipped with a :class:`CpuBudgetWarning`, never a crash: sizing a pool must
not take the service down. Absent files are normal (no cpu controller, the root
cgroup, macOS) and are skipped silently.

Everything is read below ``root`` so tests can point it at a fixture tree.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import CpuBudgetError

__all__ = ["ENV_VAR", "CpuBudget", "CpuBudgetWarning", "Limit", "cpu_budget"]

ENV_VAR = "CUTOVER_CPUS"

logger = logging.getLogger(__name__)
# A library must not print through logging's last-resort handler: the warning
# below already reaches the user once; applications that configure logging
# still get the record through propagation.
logger.addHandler(logging.NullHandler())


class CpuBudgetWarning(RuntimeWarning):
    """A cgroup file could not be read or parsed; the limit it holds was ignored."""


@dataclass(frozen=True)
class Limit:
    """One candidate limit: where it came from and how many CPUs it allows.

    ``value`` may be fractional (a CFS quota of 1.5 CPUs); ``path`` is the
    directory it was read from, as seen from inside ``root``.
    """

    source: str
    value: float
    path: str | None = None
    detail: str = ""

    @property
    def cpus(self) -> int:
        return max(1, math.ceil(self.value))

    def __str__(self) -> str:
        if self.path is None:
            return f"{self.source} {self.cpus}"
        return f"{self.source} {self.detail} at {self.path} -> {self.cpus}"


@dataclass(frozen=True)
class CpuBudget:
    """How many CPUs to plan for, and a one-line explanation of why."""

    cpus: int
    reason: str
    limits: tuple[Limit, ...] = ()


def cpu_budget(root: str | os.PathLike[str] = "/", environ: Mapping[str, str] | None = None) -> CpuBudget:
    """The number of CPUs this process may use: the tightest limit found below ``root``.

    Raises :class:`CpuBudgetError` if ``CUTOVER_CPUS`` is set to anything but
    a positive integer: a typo in an override should stop the deploy, not be
    silently replaced by a guess.
    """
    env = os.environ if environ is None else environ
    override = _override(env.get(ENV_VAR))
    if override is not None:
        reason = f"{ENV_VAR}={override} overrides cgroup and affinity limits"
        return CpuBudget(override, reason, (Limit(ENV_VAR, float(override)),))

    base = Path(root)
    limits = list(_cgroup_limits(base))
    host = _host_limit(base)
    if host is not None:
        limits.append(host)  # last, so a cgroup limit wins a tie: it says more
    if not limits:
        return CpuBudget(1, "no CPU limit or CPU count could be found; assuming 1")

    winner = min(limits, key=lambda limit: (limit.cpus, limit.value))
    others = [str(limit) for limit in limits if limit is not winner]
    reason = str(winner) + (f"; also considered: {'; '.join(others)}" if others else "")
    return CpuBudget(winner.cpus, reason, tuple(limits))


def _override(raw: str | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    # Not int(): it would also take "+3", "1_0" and non-ASCII digits.
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise CpuBudgetError(f"{ENV_VAR} must be a positive integer, got {raw!r}")
    return int(text)


def _host_limit(base: Path) -> Limit | None:
    """The affinity mask for this process, or the host count for a fixture tree."""
    if base.resolve() == Path("/") and hasattr(os, "sched_getaffinity"):
        return Limit("affinity", float(len(os.sched_getaffinity(0))))
    count = os.cpu_count()
    return Limit("cpu_count", float(count)) if count else None


# --- cgroups ----------------------------------------------------------------


@dataclass(frozen=True)
class _Mount:
    root: str  # the cgroup directory shown at ``point`` (4th mountinfo field)
    point: str
    fstype: str
    options: frozenset[str]  # super options: for cgroup v1, the controllers


def _cgroup_limits(base: Path) -> Iterator[Limit]:
    text = _read(base / "proc/self/cgroup")
    if text is None:
        return  # not Linux, or no /proc: the host count is all there is
    mountinfo = _read(base / "proc/self/mountinfo")
    if mountinfo is None:
        _warn(f"{base / 'proc/self/mountinfo'} is missing; cgroup limits ignored")
        return
    memberships = _parse_cgroup(text)
    mounts = _parse_mountinfo(mountinfo)

    v2 = _levels(base, memberships.get(""), mounts, lambda m: m.fstype == "cgroup2")
    if v2:
        yield from filter(None, (_v2_quota(base, level) for level in v2))
        yield from _cpuset(base, v2, "cpuset.cpus.effective", "cgroup v2 cpuset.cpus.effective")

    v1_cpu = _levels(base, memberships.get("cpu"), mounts, _v1_mount("cpu"))
    yield from filter(None, (_v1_quota(base, level) for level in v1_cpu))

    v1_cpuset = _levels(base, memberships.get("cpuset"), mounts, _v1_mount("cpuset"))
    yield from _cpuset(base, v1_cpuset, "cpuset.cpus", "cgroup v1 cpuset.cpus")


def _v1_mount(controller: str) -> Callable[[_Mount], bool]:
    # Match whole option names: "cpu" must not pick the "cpuset" or "cpuacct" mount.
    return lambda mount: mount.fstype == "cgroup" and controller in mount.options


def _parse_cgroup(text: str) -> dict[str, str]:
    """Map each controller to our cgroup path; ``""`` is the v2 unified hierarchy."""
    memberships: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            memberships[""] = path
        for controller in controllers.split(","):
            if controller:
                memberships[controller] = path
    return memberships


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _parse_mountinfo(text: str) -> list[_Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)  # optional fields end at a lone "-"
            fstype = fields[sep + 1]
            options = frozenset(fields[sep + 3].split(",")) if len(fields) > sep + 3 else frozenset()
        except (ValueError, IndexError):
            continue
        mounts.append(_Mount(_unescape(fields[3]), _unescape(fields[4]), fstype, options))
    return mounts


def _levels(
    base: Path, cgroup: str | None, mounts: list[_Mount], wanted: Callable[[_Mount], bool]
) -> list[PurePosixPath]:
    """Our cgroup directory and each parent up to the mount point, innermost first.

    The mount shows the hierarchy from its own root (``/kubepods/x`` in a
    container), so our path is taken relative to that. A path outside it (a
    cgroup namespace showing ``/../..``) can only mean the mount point itself.
    """
    if cgroup is None:
        return []
    candidates = [m for m in mounts if wanted(m)]
    if not candidates:
        return []
    relatives = [(_relative(cgroup, m.root), m) for m in candidates]
    relative, mount = next(((r, m) for r, m in relatives if r is not None), relatives[0])
    point = PurePosixPath(mount.point)
    parts = relative.parts if relative is not None else ()
    leaf = point.joinpath(*parts)
    if not _fs(base, leaf).is_dir():
        _warn(f"cgroup directory {_fs(base, leaf)} does not exist; limits set there are ignored")
    return [point.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _relative(path: str, root: str) -> PurePosixPath | None:
    try:
        relative = PurePosixPath(path).relative_to(root)
    except ValueError:
        return None
    return None if ".." in relative.parts else relative


def _fs(base: Path, level: PurePosixPath) -> Path:
    return base / str(level).lstrip("/")


def _v2_quota(base: Path, level: PurePosixPath) -> Limit | None:
    """``cpu.max`` holds ``QUOTA PERIOD`` or ``max PERIOD`` (unlimited)."""
    file = _fs(base, level) / "cpu.max"
    text = _read(file)
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2:
        _malformed(file, text, "expected 'QUOTA PERIOD' or 'max PERIOD'")
        return None
    if fields[0] == "max":
        return None
    quota, period = _positive(fields[0]), _positive(fields[1])
    if quota is None or period is None:
        _malformed(file, text, "quota and period must be positive integers")
        return None
    return Limit("cgroup v2 cpu.max", quota / period, str(level), f"{quota}/{period} = {quota / period:g}")


def _v1_quota(base: Path, level: PurePosixPath) -> Limit | None:
    """``cpu.cfs_quota_us`` of -1 is unlimited; otherwise divide by the period."""
    quota_file = _fs(base, level) / "cpu.cfs_quota_us"
    quota_text = _read(quota_file)
    if quota_text is None or quota_text.strip() == "-1":
        return None
    quota = _positive(quota_text)
    if quota is None:
        _malformed(quota_file, quota_text, "expected -1 or a positive integer")
        return None
    period_file = quota_file.with_name("cpu.cfs_period_us")
    period_text = _read(period_file)
    if period_text is None:
        _warn(f"{quota_file} is set but {period_file} is missing; ignored")
        return None
    period = _positive(period_text)
    if period is None:
        _malformed(period_file, period_text, "expected a positive integer")
        return None
    value = quota / period
    return Limit("cgroup v1 cpu.cfs_quota_us", value, str(level), f"{quota}/{period} = {value:g}")


def _cpuset(base: Path, levels: list[PurePosixPath], name: str, source: str) -> Iterator[Limit]:
    """The first readable cpuset list from our cgroup upwards ("0-3,5" is 5 CPUs)."""
    for level in levels:
        file = _fs(base, level) / name
        text = _read(file)
        if text is None:
            continue
        spec = text.strip()
        count = _count_cpus(spec)
        if count is None:
            _malformed(file, text, "expected a CPU list such as '0-3,5'")
            continue
        yield Limit(source, float(count), str(level), spec)
        return


def _count_cpus(spec: str) -> int | None:
    cpus: set[int] = set()
    for item in spec.split(","):
        match = re.fullmatch(r"\s*([0-9]+)(?:-([0-9]+))?\s*", item)
        if match is None:
            return None
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            return None
        cpus.update(range(first, last + 1))
    return len(cpus)


def _positive(text: str) -> int | None:
    text = text.strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) and int(text) > 0 else None


def _read(file: Path) -> str | None:
    """The file's text; ``None`` if absent (silently) or unreadable (with a warning)."""
    try:
        return file.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        _warn(f"cannot read {file}: {exc.strerror or exc}; ignored")
        return None


def _malformed(file: Path, text: str, expected: str) -> None:
    content = text.strip()
    _warn(f"{file} is empty; ignored" if not content else f"{file} holds {content!r}, {expected}; ignored")


def _warn(message: str) -> None:
    logger.warning(message)
    warnings.warn(message, CpuBudgetWarning, stacklevel=3)
