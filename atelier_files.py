"""File rules every core shares: the permissions of a file written under a temporary name, the numbered
names that keep an earlier output from being overwritten (``name_00001``, as the host's SaveImage counts), and
messages that name the path the user gave where a file was read under another (:func:`shown_paths`).

Pure Python: every core may import it. Inside the pack the cores import it relatively
(``from ..atelier_files import ...``); when a core is imported as a top-level package (tests, CLIs run from
the repository root) it is the top-level module ``atelier_files``.
"""
from __future__ import annotations

import os
import re
from typing import Mapping

__all__ = ["NUMBER_DIGITS", "numbered_name", "next_number", "process_umask", "shown_paths"]

NUMBER_DIGITS = 5


def process_umask() -> int:
    """The process umask, read without changing it where /proc allows (``os.umask`` is process-wide, so
    setting it to read it races with other threads); elsewhere read by setting it and restoring it at once.
    ``mkstemp`` / ``mkdtemp`` make 0600 / 0700: a published file gets ``0o666 & ~process_umask()``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def numbered_name(prefix: str, n: int, suffix: str = "") -> str:
    """``prefix_00001`` + ``suffix`` for output number ``n``."""
    return f"{prefix}_{n:0{NUMBER_DIGITS}d}{suffix}"


def next_number(parent: "str | os.PathLike[str]", prefix: str, suffix: str = "") -> int:
    """1 + the highest ``n`` of the ``prefix_NNNNN`` + ``suffix`` entries in ``parent`` (1 if none or
    ``parent`` cannot be listed)."""
    pat = re.compile(re.escape(prefix) + r"_(\d{%d,})" % NUMBER_DIGITS + re.escape(suffix) + "$")
    try:
        names = os.listdir(parent)
    except OSError:
        return 1
    return 1 + max((int(m.group(1)) for m in map(pat.match, names) if m), default=0)


def shown_paths(message: str, shown: "Mapping[str | os.PathLike[str], str | os.PathLike[str]]") -> str:
    """``message`` (an error's text) with each path of ``shown`` that was read or written (a key: a Ray
    worker's local copy of the driver's file, a server's folder) replaced by the path the user knows (its
    value), so that the error names the file the user gave. The longest paths first, so that a path inside
    another is replaced whole."""
    for read, show in sorted(((str(k), str(v)) for k, v in shown.items()), key=lambda kv: -len(kv[0])):
        if read and read != show:
            message = message.replace(read, show)
    return message
