"""cpu_budget against fixture /proc and /sys trees written under tmp_path."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path, PurePosixPath

import pytest

from bridge.cpu import CpuBudget, CpuBudgetWarning, cpu_budget
from bridge.errors import CpuBudgetError

HOST = 64  # os.cpu_count() during these tests, so every cgroup limit below is tighter

V2 = "0::{path}\n"
V1_CPU = "4:cpu,cpuacct:{path}\n"
V1_CPUSET = "3:cpuset:{path}\n"
V1_OTHERS = "9:name=systemd:/\n8:pids:/\n"

MOUNT_V2 = "30 23 0:26 {root} {point} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
MOUNT_V1 = "{id} 31 0:{id} {root} {point} rw,nosuid,nodev,noexec,relatime shared:{id} - cgroup cgroup rw,{opts}\n"
MOUNT_OTHER = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n31 22 0:25 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n"


def mount_v1(point: str, opts: str, root: str = "/", id: int = 40) -> str:
    return MOUNT_V1.format(id=id, root=root, point=point, opts=opts)


def write(tree: Path, path: str, text: str) -> Path:
    """Write ``text`` at ``path`` as seen from inside ``tree`` (``/sys/...`` -> ``tree/sys/...``)."""
    file = tree / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return file


def proc(tree: Path, cgroup: str, mountinfo: str) -> Path:
    write(tree, "/proc/self/cgroup", cgroup)
    write(tree, "/proc/self/mountinfo", MOUNT_OTHER + mountinfo)
    return tree


def make_cgroup_dir(tree: Path, point: str, path: str, mount_root: str) -> None:
    """Create our cgroup's directory under the mount point, as the kernel would."""
    try:
        relative = PurePosixPath(path).relative_to(mount_root)
    except ValueError:
        relative = PurePosixPath()
    if ".." in relative.parts:
        relative = PurePosixPath()
    (tree / point.replace("\\040", " ").lstrip("/") / relative).mkdir(parents=True, exist_ok=True)


def v2_tree(tree: Path, path: str = "/", mount_root: str = "/", point: str = "/sys/fs/cgroup") -> Path:
    """A pure cgroup v2 host: our cgroup is ``path``, the hierarchy mounted at ``point``."""
    proc(tree, V2.format(path=path), MOUNT_V2.format(root=mount_root, point=point))
    make_cgroup_dir(tree, point, path, mount_root)
    return tree


def v1_tree(tree: Path, path: str = "/", mount_root: str = "/") -> Path:
    """A cgroup v1 host; the cpuset mount comes first so a substring match on "cpu" would pick it."""
    proc(
        tree,
        V1_OTHERS + V1_CPU.format(path=path) + V1_CPUSET.format(path=path),
        mount_v1("/sys/fs/cgroup/cpuset", "cpuset", mount_root, id=41)
        + mount_v1("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct", mount_root, id=42),
    )
    for point in ("/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/cpu,cpuacct"):
        make_cgroup_dir(tree, point, path, mount_root)
    return tree


def v1_quota(tree: Path, directory: str, quota: str, period: str = "100000") -> None:
    write(tree, f"{directory}/cpu.cfs_quota_us", quota + "\n")
    write(tree, f"{directory}/cpu.cfs_period_us", period + "\n")


def quiet_budget(tree: Path, environ: dict[str, str] | None = None) -> CpuBudget:
    """cpu_budget, failing the test if it warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return cpu_budget(tree, environ={} if environ is None else environ)


@pytest.fixture(autouse=True)
def fixed_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: HOST)
    monkeypatch.delenv("CUTOVER_CPUS", raising=False)


# --- cgroup v1 ----------------------------------------------------------------


def test_v1_quota(tmp_path: Path) -> None:
    v1_tree(tmp_path, "/docker/abc")
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/docker/abc", "300000")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 3
    assert budget.reason.startswith(
        "cgroup v1 cpu.cfs_quota_us 300000/100000 = 3 at /sys/fs/cgroup/cpu,cpuacct/docker/abc -> 3"
    )
    assert f"cpu_count {HOST}" in budget.reason


def test_v1_unlimited(tmp_path: Path) -> None:
    v1_tree(tmp_path, "/docker/abc")
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/docker/abc", "-1")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == HOST
    assert budget.reason == f"cpu_count {HOST}"


def test_v1_parent_tighter_than_leaf(tmp_path: Path) -> None:
    v1_tree(tmp_path, "/kubepods/pod1/ctr")
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/ctr", "-1")
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1", "200000")
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/kubepods", "800000")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 2
    assert budget.reason.startswith(
        "cgroup v1 cpu.cfs_quota_us 200000/100000 = 2 at /sys/fs/cgroup/cpu,cpuacct/kubepods/pod1 "
    )
    assert [limit.value for limit in budget.limits] == [2.0, 8.0, HOST]


def test_v1_container_view_reads_the_mount_point(tmp_path: Path) -> None:
    # Docker without a cgroup namespace: the mount's root is our own cgroup.
    v1_tree(tmp_path, "/docker/abc", mount_root="/docker/abc")
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct", "150000")
    assert quiet_budget(tmp_path).cpus == 2


# --- cgroup v2 ----------------------------------------------------------------


def test_v2_cpu_max(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/app.slice")
    write(tmp_path, "/sys/fs/cgroup/app.slice/cpu.max", "300000 100000\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 3
    assert budget.reason.startswith("cgroup v2 cpu.max 300000/100000 = 3 at /sys/fs/cgroup/app.slice -> 3")


def test_v2_max_is_unlimited(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/app.slice")
    write(tmp_path, "/sys/fs/cgroup/app.slice/cpu.max", "max 100000\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == HOST
    assert budget.reason == f"cpu_count {HOST}"


def test_v2_parent_tighter_than_leaf(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/kubepods/pod1/app")
    write(tmp_path, "/sys/fs/cgroup/kubepods/pod1/app/cpu.max", "max 100000\n")
    write(tmp_path, "/sys/fs/cgroup/kubepods/pod1/cpu.max", "400000 100000\n")
    write(tmp_path, "/sys/fs/cgroup/kubepods/cpu.max", "200000 100000\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 2
    assert budget.reason.startswith("cgroup v2 cpu.max 200000/100000 = 2 at /sys/fs/cgroup/kubepods -> 2")


def test_v2_leaf_tighter_than_parent(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/kubepods/pod1/app")
    write(tmp_path, "/sys/fs/cgroup/kubepods/pod1/app/cpu.max", "100000 100000\n")
    write(tmp_path, "/sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 1
    assert budget.reason.startswith("cgroup v2 cpu.max 100000/100000 = 1 at /sys/fs/cgroup/kubepods/pod1/app -> 1")


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [
        ("150000 100000", 2),  # 1.5 rounds up
        ("50000 100000", 1),  # 0.5 rounds up
        ("1000 100000", 1),  # 0.01: never below one
        ("250000 100000", 3),
        ("100000 100000", 1),  # exact: no spurious round-up
        ("300000 50000", 6),  # period other than the default
    ],
)
def test_fractional_quota_rounds_up(tmp_path: Path, cpu_max: str, cpus: int) -> None:
    v2_tree(tmp_path, "/app")
    write(tmp_path, "/sys/fs/cgroup/app/cpu.max", cpu_max + "\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == cpus
    assert budget.reason.startswith(f"cgroup v2 cpu.max {cpu_max.replace(' ', '/')} = ")


def test_v2_mount_root_is_not_slash(tmp_path: Path) -> None:
    # A container that sees the host's path in /proc/self/cgroup but only its
    # own subtree at the mount point: /kubepods/x/app is <mount>/app.
    v2_tree(tmp_path, "/kubepods/x/app", mount_root="/kubepods/x")
    write(tmp_path, "/sys/fs/cgroup/app/cpu.max", "200000 100000\n")
    write(tmp_path, "/sys/fs/cgroup/kubepods/x/app/cpu.max", "500000 100000\n")  # decoy
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 2
    assert budget.reason.startswith("cgroup v2 cpu.max 200000/100000 = 2 at /sys/fs/cgroup/app -> 2")
    assert [limit.path for limit in budget.limits] == ["/sys/fs/cgroup/app", None]


@pytest.mark.parametrize(
    ("path", "mount_root"),
    [
        ("/../../other", "/"),  # cgroup namespace, process outside it
        ("/system.slice/foo", "/kubepods/x"),
    ],
)
def test_v2_path_outside_mount_root_falls_back_to_mount_point(tmp_path: Path, path: str, mount_root: str) -> None:
    v2_tree(tmp_path, path, mount_root=mount_root)
    write(tmp_path, "/sys/fs/cgroup/cpu.max", "300000 100000\n")
    write(tmp_path, "/sys/other/cpu.max", "100000 100000\n")  # /sys/fs/cgroup/../../other: must not escape
    write(tmp_path, "/sys/fs/cgroup/system.slice/foo/cpu.max", "100000 100000\n")  # not ours either
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 3
    assert budget.reason.startswith("cgroup v2 cpu.max 300000/100000 = 3 at /sys/fs/cgroup -> 3")


def test_escaped_mount_point(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/app", point="/sys/fs/cgroup\\040v2")
    write(tmp_path, "/sys/fs/cgroup v2/app/cpu.max", "200000 100000\n")
    assert quiet_budget(tmp_path).cpus == 2


# --- hybrid -------------------------------------------------------------------


@pytest.mark.parametrize(("v1", "v2", "cpus", "winner"), [("600000", "300000", 3, "v2"), ("200000", "700000", 2, "v1")])
def test_hybrid_takes_the_minimum_of_v1_and_v2(tmp_path: Path, v1: str, v2: str, cpus: int, winner: str) -> None:
    proc(
        tmp_path,
        V1_OTHERS + V1_CPU.format(path="/svc") + V2.format(path="/"),
        mount_v1("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct")
        + MOUNT_V2.format(root="/", point="/sys/fs/cgroup/unified"),
    )
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/svc", v1)
    write(tmp_path, "/sys/fs/cgroup/unified/cpu.max", f"{v2} 100000\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == cpus
    assert budget.reason.startswith(f"cgroup {winner} ")
    assert {limit.source for limit in budget.limits} == {"cgroup v1 cpu.cfs_quota_us", "cgroup v2 cpu.max", "cpu_count"}


# --- cpuset -------------------------------------------------------------------


def test_cpuset_v2_list_syntax(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/app")
    write(tmp_path, "/sys/fs/cgroup/app/cpuset.cpus.effective", "0-3,5,7-8\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 7
    assert budget.reason.startswith("cgroup v2 cpuset.cpus.effective 0-3,5,7-8 at /sys/fs/cgroup/app -> 7")


def test_cpuset_v2_from_parent_when_leaf_has_none(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/a/b")
    write(tmp_path, "/sys/fs/cgroup/a/cpuset.cpus.effective", "2-4\n")
    write(tmp_path, "/sys/fs/cgroup/cpuset.cpus.effective", "0-31\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 3
    assert budget.reason.startswith("cgroup v2 cpuset.cpus.effective 2-4 at /sys/fs/cgroup/a -> 3")


def test_cpuset_v1(tmp_path: Path) -> None:
    v1_tree(tmp_path, "/docker/abc")
    write(tmp_path, "/sys/fs/cgroup/cpuset/docker/abc/cpuset.cpus", "0-1,4\n")
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/docker/abc", "500000")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 3
    assert budget.reason.startswith("cgroup v1 cpuset.cpus 0-1,4 at /sys/fs/cgroup/cpuset/docker/abc -> 3")
    assert "cgroup v1 cpu.cfs_quota_us 500000/100000 = 5" in budget.reason


def test_quota_beats_looser_cpuset(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/app")
    write(tmp_path, "/sys/fs/cgroup/app/cpuset.cpus.effective", "0-7\n")
    write(tmp_path, "/sys/fs/cgroup/app/cpu.max", "150000 100000\n")
    budget = quiet_budget(tmp_path)
    assert budget.cpus == 2
    assert budget.reason.startswith("cgroup v2 cpu.max")
    assert "cgroup v2 cpuset.cpus.effective 0-7 at /sys/fs/cgroup/app -> 8" in budget.reason


def test_cgroup_limit_wins_a_tie_with_the_host(tmp_path: Path) -> None:
    v2_tree(tmp_path, "/app")
    write(tmp_path, "/sys/fs/cgroup/app/cpu.max", f"{HOST * 100000} 100000\n")
    assert quiet_budget(tmp_path).reason.startswith("cgroup v2 cpu.max")


# --- malformed and missing files ----------------------------------------------


@pytest.mark.parametrize(
    "content",
    ["", "\n", "garbage", "max", "100000 0", "100000 -5", "abc 100000", "0 100000", "-1 100000", "1 2 3"],
)
def test_malformed_cpu_max_is_skipped_with_a_warning(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    v2_tree(tmp_path, "/app")
    file = write(tmp_path, "/sys/fs/cgroup/app/cpu.max", content)
    write(tmp_path, "/sys/fs/cgroup/cpu.max", "400000 100000\n")  # a valid parent still counts
    with (
        caplog.at_level(logging.WARNING, logger="bridge.cpu"),
        pytest.warns(CpuBudgetWarning, match="cpu.max") as record,
    ):
        budget = cpu_budget(tmp_path, environ={})
    assert budget.cpus == 4
    assert budget.reason.startswith("cgroup v2 cpu.max 400000/100000 = 4 at /sys/fs/cgroup -> 4")
    assert str(file) in str(record[0].message)
    assert [r.name for r in caplog.records] == ["bridge.cpu"]
    assert str(file) in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("quota", "period", "match"),
    [
        ("abc", "100000", "cfs_quota_us"),
        ("0", "100000", "cfs_quota_us"),
        ("200000", "0", "cfs_period_us"),
        ("200000", "", "cfs_period_us"),
    ],
)
def test_malformed_v1_quota_is_skipped_with_a_warning(tmp_path: Path, quota: str, period: str, match: str) -> None:
    v1_tree(tmp_path, "/svc")
    v1_quota(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/svc", quota, period)
    with pytest.warns(CpuBudgetWarning, match=match):
        budget = cpu_budget(tmp_path, environ={})
    assert budget.cpus == HOST
    assert budget.reason == f"cpu_count {HOST}"


def test_v1_quota_without_period_warns(tmp_path: Path) -> None:
    v1_tree(tmp_path, "/svc")
    write(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/svc/cpu.cfs_quota_us", "200000\n")
    with pytest.warns(CpuBudgetWarning, match="cpu.cfs_period_us is missing"):
        assert cpu_budget(tmp_path, environ={}).cpus == HOST


def test_unreadable_cpu_max_warns(tmp_path: Path) -> None:
    # Permissions do not stop root, so make the "file" a directory: read_text fails with an OSError.
    v2_tree(tmp_path, "/app")
    (tmp_path / "sys/fs/cgroup/app/cpu.max").mkdir(parents=True)
    with pytest.warns(CpuBudgetWarning, match="cannot read .*cpu.max"):
        assert cpu_budget(tmp_path, environ={}).cpus == HOST


@pytest.mark.parametrize("content", ["", "\n", "3-1", "0-3,x", "0,,1"])
def test_malformed_cpuset_is_skipped_with_a_warning(tmp_path: Path, content: str) -> None:
    v2_tree(tmp_path, "/app")
    write(tmp_path, "/sys/fs/cgroup/app/cpuset.cpus.effective", content)
    with pytest.warns(CpuBudgetWarning, match="cpuset.cpus.effective"):
        budget = cpu_budget(tmp_path, environ={})
    assert budget.cpus == HOST


def test_no_proc_self_cgroup_is_silent(tmp_path: Path) -> None:
    # macOS, or a tree without /proc: just the host count, and no warning.
    budget = quiet_budget(tmp_path)
    assert budget.cpus == HOST
    assert budget.reason == f"cpu_count {HOST}"
    assert budget.limits[0].source == "cpu_count"


def test_absent_limit_files_are_silent(tmp_path: Path) -> None:
    # No cpu controller enabled: the cgroup directory exists but holds no cpu.max.
    v2_tree(tmp_path, "/app")
    assert (tmp_path / "sys/fs/cgroup/app").is_dir()
    assert quiet_budget(tmp_path).cpus == HOST


def test_missing_mountinfo_warns(tmp_path: Path) -> None:
    write(tmp_path, "/proc/self/cgroup", V2.format(path="/"))
    with pytest.warns(CpuBudgetWarning, match="mountinfo is missing"):
        assert cpu_budget(tmp_path, environ={}).cpus == HOST


def test_missing_cgroup_directory_warns_and_reads_parents(tmp_path: Path) -> None:
    proc(tmp_path, V2.format(path="/gone/app"), MOUNT_V2.format(root="/", point="/sys/fs/cgroup"))
    write(tmp_path, "/sys/fs/cgroup/cpu.max", "200000 100000\n")
    with pytest.warns(CpuBudgetWarning, match="does not exist"):
        assert cpu_budget(tmp_path, environ={}).cpus == 2


def test_cgroup_line_without_a_mount_is_ignored(tmp_path: Path) -> None:
    proc(tmp_path, V2.format(path="/app"), "")
    write(tmp_path, "/sys/fs/cgroup/app/cpu.max", "100000 100000\n")
    assert quiet_budget(tmp_path).cpus == HOST


# --- CUTOVER_CPUS -------------------------------------------------------------


@pytest.mark.parametrize(("value", "cpus"), [("3", 3), (" 5\n", 5), ("128", 128)])
def test_override(tmp_path: Path, value: str, cpus: int) -> None:
    v2_tree(tmp_path, "/app")
    write(tmp_path, "/sys/fs/cgroup/app/cpu.max", "garbage")  # not even read
    write(tmp_path, "/sys/fs/cgroup/cpu.max", "100000 100000\n")  # tighter, still overridden
    budget = quiet_budget(tmp_path, environ={"CUTOVER_CPUS": value})
    assert budget.cpus == cpus
    assert budget.reason.startswith(f"CUTOVER_CPUS={cpus}")
    assert [limit.source for limit in budget.limits] == ["CUTOVER_CPUS"]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "", " ", "+3", "1_0", "\u0663"])
def test_invalid_override_raises(tmp_path: Path, value: str) -> None:
    with pytest.raises(CpuBudgetError, match="CUTOVER_CPUS must be a positive integer") as info:
        cpu_budget(tmp_path, environ={"CUTOVER_CPUS": value})
    assert repr(value) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_override_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOVER_CPUS", "7")
    assert cpu_budget(tmp_path).cpus == 7
    monkeypatch.setenv("CUTOVER_CPUS", "seven")
    with pytest.raises(CpuBudgetError, match="'seven'"):
        cpu_budget(tmp_path)


# --- the real machine ---------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="sched_getaffinity is Linux-only")
def test_real_root_is_within_affinity() -> None:
    budget = cpu_budget("/", environ={})
    assert 1 <= budget.cpus <= len(os.sched_getaffinity(0))
    assert "affinity" in [limit.source for limit in budget.limits]
    assert budget.reason


def test_budget_is_frozen(tmp_path: Path) -> None:
    budget = cpu_budget(tmp_path, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.cpus = 1  # type: ignore[misc]
