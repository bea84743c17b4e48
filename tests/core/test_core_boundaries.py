"""No core package (magcache/, nag/, dloral/, restoration/) refers to the repository's ``scripts/``: not by
import, not by a path built or written out, not by loading a file by path (``spec_from_file_location``,
``SourceFileLoader``, ``runpy``). The cores are pure torch; the host side of their command lines is
composed in from outside (``scripts/dloral_cli.py`` passes ``dloral.__main__.main`` its loader)."""
import ast
import re

import pytest

from _testenv import REPO

CORES = ("magcache", "nag", "dloral", "restoration")
SCRIPT_MODULES = {f.stem for f in (REPO / "scripts").glob("*.py")} | {"scripts"}
LOADERS = ("spec_from_file_location", "SourceFileLoader", "runpy", "run_path")
SCRIPTS_PATH = re.compile(r"""\bscripts[ \t]*[/\\]|(["'])scripts\1""")   # scripts/..., "scripts" as a component


def problems(text):
    """What in ``text`` (a module's source) refers to ``scripts/``; empty when nothing does."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + ([a.name for a in node.names] if not node.module else [])
        else:
            continue
        for name in names:
            if set(name.split(".")) & SCRIPT_MODULES:
                found.append(f"line {node.lineno}: imports {name!r}")
    for i, line in enumerate(text.splitlines(), 1):
        if SCRIPTS_PATH.search(line):
            found.append(f"line {i}: a path into scripts/: {line.strip()[:100]!r}")
        for word in LOADERS:
            if word in line:
                found.append(f"line {i}: loads a file by path ({word}): {line.strip()[:100]!r}")
    return found


def test_no_core_module_refers_to_scripts():
    files = [f for core in CORES for f in sorted((REPO / core).rglob("*.py"))]
    assert len(files) > 30 and {f.relative_to(REPO).parts[0] for f in files} == set(CORES)
    bad = {str(f.relative_to(REPO)): p for f in files if (p := problems(f.read_text()))}
    assert not bad, "core modules refer to scripts/:\n" + "\n".join(f"{k}: {v}" for k, v in bad.items())


@pytest.mark.parametrize("text", [
    "import hostbridge\n",
    "from scripts import dloral_cli\n",
    "from ..scripts.hostbridge import import_pack\n",
    "from .. import scripts\n",
    "import scripts.dloral_cli as c\n",
    "HOST = pathlib.Path('scripts') / 'dloral_cli.py'\n",
    "p = REPO / \"scripts\" / \"x.py\"\n",
    "p = os.path.join(root, 'scripts', 'x.py')\n",
    "MSG = 'run python scripts/dloral_cli.py'\n",
    "'''see scripts\\\\dloral_cli.py'''\n",
    "spec = importlib.util.spec_from_file_location('m', path)\n",
    "import runpy\n",
])
def test_the_scan_catches_each_kind_of_reference(text):
    assert problems(text), text


def test_the_scan_lets_prose_and_other_names_pass():
    text = ('"""The official FLUX scripts differ; the transcripts and scripts_dir are not paths."""\n'
            "from . import settings\nfrom .. import nodes_helper\nscripts_dir = 1\n")
    assert problems(text) == []
