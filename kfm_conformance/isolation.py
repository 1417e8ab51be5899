"""How a pipeline run is contained: Linux namespaces through bubblewrap, or nothing.

``--isolation auto|namespaces|none``:

- ``namespaces``: every run gets its own PID namespace and a private ``/proc`` (it cannot see
  or signal the harness, nor read its environment), a file system that is read-only
  everywhere except the run's working directory, a private ``/tmp`` (also its ``HOME``) and
  the paths the profile declares writable, and the shared network (the origin, the capture
  sinks and the real services listen on 127.0.0.1). When the run's main process exits, the
  namespace ends and the kernel kills whatever the run left behind. The run holds no
  capability (``--cap-drop ALL``): started by a root harness it would otherwise keep them,
  and with ``CAP_SYS_ADMIN`` remount its read-only root file system writable and write
  anywhere on the host; with ``CAP_SYS_PTRACE`` open its init's report pipe.
- ``none``: the run is a plain child process. Certificates say "unisolated".
- ``auto``: ``namespaces`` where the kernel allows them, else ``none`` with one line saying
  why and how to enable them.

This module only decides and builds argv; :mod:`kfm_conformance.sandbox` spawns.
"""

from __future__ import annotations

import enum
import functools
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kfm_conformance.verdict import ConfigurationError


class Isolation(enum.StrEnum):
    NAMESPACES = "namespaces"
    NONE = "none"


#: ``--isolation`` (CLI) and ``--kfm-isolation`` (plugin): the choices and their help.
CHOICES = ("auto", "namespaces", "none")
OPTION_HELP = (
    "contain every pipeline run in Linux namespaces (bubblewrap): auto (where the kernel "
    "allows them; default), namespaces (required), none"
)

#: What to tell a user whose machine refuses namespaces.
HOW_TO_ENABLE = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) and allow user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 also "
    "sysctl kernel.apparmor_restrict_unprivileged_userns=0), or run as root"
)


@dataclass(frozen=True)
class IsolationChoice:
    """The isolation a certification uses, and why (for the report's provenance)."""

    mode: Isolation
    requested: str
    reason: str
    tool: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "mode": str(self.mode),
            "requested": self.requested,
            "reason": self.reason,
            "tool": self.tool,
        }

    @property
    def isolated(self) -> bool:
        return self.mode is Isolation.NAMESPACES


@functools.cache
def probe_namespaces() -> tuple[bool, str, str | None]:
    """Can this machine run a command in a bubblewrap sandbox? (ok, why not, bwrap version)"""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bubblewrap (bwrap) is not installed", None
    try:
        done = subprocess.run(
            [*_base_argv(bwrap, Path("/"), Path("/"), ()), "--", "true"],
            capture_output=True,
            timeout=20,
            check=False,
        )
        version = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bubblewrap did not run: {exc}", None
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace").strip().splitlines()
        return False, "the kernel refused namespaces: " + (text[-1] if text else "no reason"), None
    return True, "", version or "bwrap"


def choose(requested: str) -> IsolationChoice:
    """Resolve ``--isolation``; ``namespaces`` where they are unavailable is bad input."""
    if requested == "none":
        return IsolationChoice(Isolation.NONE, requested, "asked for with --isolation none")
    ok, why, tool = probe_namespaces()
    if ok:
        return IsolationChoice(Isolation.NAMESPACES, requested, "namespaces available", tool)
    if requested == "namespaces":
        raise ConfigurationError(f"--isolation namespaces: {why}; to enable: {HOW_TO_ENABLE}")
    return IsolationChoice(Isolation.NONE, requested, f"{why}; to enable: {HOW_TO_ENABLE}")


def _base_argv(
    bwrap: str,
    workdir: Path,
    private_tmp: Path,
    writable: Sequence[Path],
    readable: Sequence[Path] = (),
) -> list[str]:
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if private_tmp != Path("/"):
        argv += ["--bind", str(private_tmp), "/tmp"]
    for path in readable:  # the pipeline's own files, where the private /tmp would hide them
        argv += ["--ro-bind", str(path), str(path)]
    for path in writable:
        argv += ["--bind", str(path), str(path)]
    if workdir != Path("/"):
        argv += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    # ``--as-pid-1``: the run's own init (run_init, which is not dumpable) is PID 1. The
    # reaper bubblewrap would put there instead is dumpable and holds every descriptor the run
    # was given, the trace a tracer writes among them (see sandbox.seal_wrapper).
    argv += ["--unshare-pid", "--as-pid-1", "--die-with-parent", "--new-session"]
    argv += ["--cap-drop", "ALL"]
    return argv


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """The paths that lie inside none of the others, in order, once each."""
    chosen: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if path.exists() and not any(path.is_relative_to(c) for c in chosen):
            chosen.append(path)
    return chosen


def sandbox_argv(
    workdir: Path,
    private_tmp: Path,
    writable: Sequence[Path] = (),
    hidden: Sequence[Path] = (),
    readable: Sequence[Path] = (),
) -> list[str]:
    """bwrap's argv up to and including ``--``: the command follows.

    ``readable`` paths under ``/tmp`` (the profile's directory, the program's) stay visible,
    read-only, over the private ``/tmp``; ``hidden`` paths (the harness's results) are covered
    by an empty read-only tmpfs.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ConfigurationError(f"--isolation namespaces: bwrap is not installed; {HOW_TO_ENABLE}")
    under_tmp = [p for p in readable if p.is_relative_to("/tmp") and p != Path("/tmp")]
    argv = _base_argv(bwrap, workdir, private_tmp, writable, _outermost(under_tmp))
    for path in hidden:
        if path.is_dir():
            argv += ["--tmpfs", str(path), "--remount-ro", str(path)]
    return [*argv, "--"]
