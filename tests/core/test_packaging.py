"""Packaging metadata: requirements list exactly what the pack imports; pyproject fits the registry."""
import ast
import re
import sys
import tomllib

from _testenv import REPO

# Distribution name -> import name, where they differ.
IMPORT_NAME = {"opencv-python-headless": "cv2", "pillow": "PIL"}
# Provided by ComfyUI itself (its own requirements), imported by nodes/ only.
HOST_PROVIDED = {"torch", "comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes", "execution",
                 "node_helpers", "comfyui_version", "aiohttp"}
# Used only by the real-image benchmark (restoration/realbench.py, imported inside its picture loader):
# a development requirement, listed in requirements-dev.txt, never needed to run the nodes.
DEV_ONLY = {"skimage": ("scikit-image", {"restoration/realbench.py"}),
            "sklearn": ("scikit-learn", {"restoration/realbench.py"}),
            "matplotlib": ("matplotlib", {"restoration/realbench.py"})}
PACK_CODE = ("__init__.py", "atelier_settings.py", "atelier_files.py", "atelier_ray.py", "magcache", "nag", "dloral", "restoration", "tinywan", "nodes")
# The pack's own top-level module: a core imports it relatively inside the pack and, as the fallback of that
# import, absolutely when the core itself is a top-level package (tests, CLIs run from the repository root).
OWN_TOP_LEVEL = {"atelier_settings", "atelier_files", "atelier_ray"}
# Optional extras: import name -> (distribution, the files that may import it, the requirements file and the
# pyproject extra that declare it). Imported only inside functions, never when a module is imported.
OPTIONAL = {"ray": ("ray", {"atelier_ray.py"}, "requirements-ray.txt", "ray")}
# Shipped with PyTorch's CUDA builds (the host's torch), imported optionally by one module only: NAG's hand-written
# kernel, which is used where it imports (CUDA) and never needed otherwise.
WITH_TORCH = {"triton": {"nag/_triton_kernels.py"}}


def _requirements():
    names = []
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def _dist(req):
    return re.split(r"[<>=!~;\[ ]", req, 1)[0].strip().lower()


def _top_level_imports():
    """Absolute top-level imports of the shipped code (not tests, bench or scripts), by file."""
    found = {}
    for part in PACK_CODE:
        p = REPO / part
        for f in ([p] if p.is_file() else sorted(p.rglob("*.py"))):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for m in mods:
                    found.setdefault(m.split(".")[0], set()).add(str(f.relative_to(REPO)))
    return found


def test_requirements_are_exactly_the_imports():
    imports = _top_level_imports()
    declared = {IMPORT_NAME.get(_dist(r), _dist(r)): r for r in _requirements()}
    unused = sorted(r for name, r in declared.items() if name not in imports)
    assert not unused, f"requirements.txt lists {unused}, which no shipped module imports"
    third_party = {m: files for m, files in imports.items()
                   if m not in sys.stdlib_module_names and m not in HOST_PROVIDED and m not in DEV_ONLY
                   and m not in OWN_TOP_LEVEL and m not in OPTIONAL and m not in WITH_TORCH}
    for mod, allowed in WITH_TORCH.items():
        assert imports.get(mod, set()) <= allowed, f"{mod} imported outside {allowed}: {imports[mod]}"
    undeclared = {m: sorted(f) for m, f in third_party.items() if m not in declared}
    assert not undeclared, f"imported but not in requirements.txt: {undeclared}"
    dev = (REPO / "requirements-dev.txt").read_text().lower()
    for mod, (dist, allowed) in DEV_ONLY.items():
        assert imports.get(mod, set()) <= allowed, f"{mod} imported outside {allowed}: {imports[mod]}"
        assert dist in dev, f"{dist} (imported as {mod} by {allowed}) missing from requirements-dev.txt"


def test_optional_extras_are_declared_and_imported_lazily():
    """Ray (the ``--ray`` of the batch CLIs) is an optional extra: listed in requirements-ray.txt and the
    pyproject extra ``ray``, not in requirements.txt, imported only by atelier_ray.py and only inside its
    functions; importing the cores and their batch modules does not import it."""
    imports = _top_level_imports()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for mod, (dist, allowed, req_file, extra) in OPTIONAL.items():
        assert imports.get(mod, set()) <= allowed, f"{mod} imported outside {allowed}: {imports[mod]}"
        lines = [ln.split("#", 1)[0].strip() for ln in (REPO / req_file).read_text().splitlines()]
        reqs = [ln for ln in lines if ln]
        assert [_dist(r) for r in reqs] == [dist], reqs
        assert project["optional-dependencies"][extra] == reqs
        assert dist not in [_dist(r) for r in _requirements()]
        for f in allowed:
            tree = ast.parse((REPO / f).read_text())
            top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                   and any((a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0] == mod
                           for a in (n.names if isinstance(n, ast.Import) else [n]))]
            assert not top, f"{f} imports {mod} at module level (line {top[0].lineno})"
    import subprocess
    code = ("import sys, atelier_ray, restoration.batch, restoration.__main__, dloral.batch, dloral.__main__; "
            "bad = [m for m in sys.modules if m.split('.')[0] in %r]; print(bad); sys.exit(bool(bad))" % list(OPTIONAL))
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pyproject_dependencies_equal_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(project["dependencies"]) == sorted(_requirements())


def test_pyproject_fits_the_registry():
    """docs.comfy.org/registry/specifications: Icon is a URL (or absent), OS/accelerator classifiers,
    requires-comfyui names the supported host versions."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy, project = data["tool"]["comfy"], data["project"]
    icon = comfy.get("Icon")
    assert icon is None or re.match(r"^https://\S+\.(svg|png|jpg|gif)$", icon), f"Icon must be a URL: {icon!r}"
    classifiers = project.get("classifiers", [])
    assert any(c.startswith("Operating System :: ") for c in classifiers), classifiers
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert comfy.get("requires-comfyui") == ">=0.3.64,<=0.8.0"
    assert (REPO / project["license"]["file"]).is_file()


MACHINE_ROOTS = ("/work/", "/root/", "/home/", "/tmp/", "/Users/", "/mnt/", "/opt/", "/srv/", "/data/", "/var/")


def test_no_absolute_machine_paths_in_tests_and_scripts():
    """Tests and scripts find files from their own location (``_testenv.REPO``), ``COMFYUI_DIR`` or
    a temporary folder, never from a path of one machine."""
    found = []
    for f in sorted(list((REPO / "tests").rglob("*.py")) + list((REPO / "scripts").glob("*.py"))):
        if "_out" in f.parts:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                v = node.value.strip()
                if (v.startswith(MACHINE_ROOTS) and v not in MACHINE_ROOTS) or re.match(r"^[A-Za-z]:\\\\", v):
                    found.append(f"{f.relative_to(REPO)}:{node.lineno}: {v[:80]!r}")
    assert not found, "absolute machine paths:\n" + "\n".join(found)


def test_own_module_is_imported_relatively_first():
    """Every absolute import of ``atelier_settings`` in the shipped code is the fallback of a relative import
    of the same module (``try: from ..atelier_settings import ... except ImportError: from atelier_settings
    import ...``), so inside ComfyUI the pack never depends on a top-level name."""
    users, bad = set(), []
    for part in PACK_CODE:
        p = REPO / part
        for f in ([p] if p.is_file() else sorted(p.rglob("*.py"))):
            tree = ast.parse(f.read_text())
            allowed = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Try) and any(isinstance(n, ast.ImportFrom) and n.level == 2
                                                     and n.module in OWN_TOP_LEVEL for n in node.body):
                    allowed |= {id(n) for h in node.handlers for n in h.body}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in OWN_TOP_LEVEL:
                    users.add(str(f.relative_to(REPO)))
                    if id(node) not in allowed:
                        bad.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert not bad, f"absolute imports of {OWN_TOP_LEVEL} that are not the fallback of a relative one: {bad}"
    assert users >= {"magcache/settings.py", "nag/settings.py", "dloral/settings.py"}, users
