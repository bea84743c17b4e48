"""The one bridge from the dev tools (host tests, benchmarks, the DLoRAL CLI, the parity harness) to a
ComfyUI tree: find the tree, set the host's flags, import the pack as a package the way ComfyUI does
(under a name of the caller's choosing, so that its relative imports resolve).

    import hostbridge                                  # scripts/ on sys.path
    pack = hostbridge.import_pack(tree, name="atelier_bench_pack", cpu="force", progress_bars=False)
    tinywan = hostbridge.submodule(pack, "tinywan")    # the pack's own submodule, not a second copy

Rules, each stated once here:

* **Which tree** (``find_comfyui``): a tree given by the caller (an argument, ``--comfyui``) must be one;
  without it, ``$COMFYUI_DIR``, else ``~/ComfyUI`` (the host tier's defaults). A tree is a folder holding
  ``comfy/model_patcher.py``. ``require_comfyui`` raises ``HostTreeError`` (a ``ValueError``) naming what
  was tried and what is expected.
* **One host per process**: a second tree is refused once ``comfy`` was imported from a first one.
* **CPU policy** (``cpu``): the host reads its flags when its modules are first imported, so the flag is
  set before: ``"force"`` always runs on the CPU (tests, CPU benchmarks), ``"no-cuda"`` only where torch
  sees no CUDA device (the DLoRAL CLI, GPU benchmarks), ``None`` leaves the host's flag as it is.
* **Progress bars** (``progress_bars``): ``True``/``False`` sets the host's switch, ``None`` leaves it.
* **Import**: once per package name (a second call returns the same module). A failed import removes
  the package and every submodule under its name from ``sys.modules`` and raises the error, so nothing
  half-imported stays behind and a retry starts clean. The host modules already imported stay.
"""
import importlib
import importlib.util
import os
import pathlib
import sys
from types import ModuleType
from typing import Optional, Union

REPO = pathlib.Path(__file__).resolve().parents[1]
CPU_POLICIES = ("force", "no-cuda", None)
MARKER = pathlib.Path("comfy") / "model_patcher.py"
EXPECTED = f"a ComfyUI checkout (the folder holding {MARKER.as_posix()})"

PathLike = Union[str, os.PathLike]


class HostTreeError(ValueError):
    """No usable ComfyUI tree: the message names the tree and what is expected."""


def is_tree(path: Optional[PathLike]) -> bool:
    return bool(path) and (pathlib.Path(path) / MARKER).is_file()


def _candidates(tree: Optional[PathLike]):
    """``(path, where it came from)`` in the order they are tried."""
    if tree is not None:
        return [(str(tree), "given")]
    env = os.environ.get("COMFYUI_DIR")
    return ([(env, "$COMFYUI_DIR")] if env else []) + [(str(pathlib.Path.home() / "ComfyUI"), "~/ComfyUI")]


def find_comfyui(tree: Optional[PathLike] = None) -> Optional[pathlib.Path]:
    """The ComfyUI tree: ``tree`` if given (None when it is not a tree), else ``$COMFYUI_DIR``, else
    ``~/ComfyUI``; resolved, or None."""
    for path, _ in _candidates(tree):
        if is_tree(path):
            return pathlib.Path(path).resolve()
    return None


def require_comfyui(tree: Optional[PathLike] = None, label: str = "the tree") -> pathlib.Path:
    """``find_comfyui`` or ``HostTreeError``; ``label`` names the caller's input (e.g. ``--comfyui``)."""
    found = find_comfyui(tree)
    if found is not None:
        return found
    if tree is not None:
        raise HostTreeError(f"{label} {os.path.abspath(tree)!r} is not a ComfyUI tree: expected {EXPECTED}")
    tried = ", ".join(f"{where} = {path!r}" for path, where in _candidates(None))
    raise HostTreeError(f"no ComfyUI tree found (tried {tried}): pass {label} or set COMFYUI_DIR to {EXPECTED}")


def host_tree() -> Optional[pathlib.Path]:
    """The tree this process imported ``comfy`` from, or None."""
    mod = sys.modules.get("comfy.cli_args") or sys.modules.get("comfy.model_patcher")
    file = getattr(mod, "__file__", None)
    return pathlib.Path(file).resolve().parents[1] if file else None


def enter_host(tree: Optional[PathLike] = None, *, cpu: Optional[str], progress_bars: Optional[bool] = None,
               label: str = "the tree") -> pathlib.Path:
    """Put the tree on ``sys.path`` (first) and set the host's CPU flag and progress bars; returns the tree."""
    if cpu not in CPU_POLICIES:
        raise ValueError(f"cpu={cpu!r}: expected one of {CPU_POLICIES}")
    found = require_comfyui(tree, label)
    other = host_tree()
    if other is not None and other != found:
        raise HostTreeError(f"{label} {str(found)!r}: this process already imported ComfyUI from {str(other)!r}; "
                            "one process holds one host (start a new process for another tree)")
    if str(found) not in sys.path:
        sys.path.insert(0, str(found))
    from comfy.cli_args import args   # read by the host's modules when they are first imported
    if cpu == "force":
        args.cpu = True
    elif cpu == "no-cuda":
        import torch
        if not torch.cuda.is_available():
            args.cpu = True
    if progress_bars is not None:
        import comfy.utils
        comfy.utils.PROGRESS_BAR_ENABLED = bool(progress_bars)
    return found


def _forget(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def import_pack(tree: Optional[PathLike] = None, *, name: str, cpu: Optional[str],
                progress_bars: Optional[bool] = None, label: str = "the tree",
                pack_dir: PathLike = REPO) -> ModuleType:
    """The pack (``pack_dir``, default this repository) imported as the package ``name`` with the host
    ``tree`` (see ``find_comfyui``) on ``sys.path``, as ComfyUI imports a custom node folder."""
    enter_host(tree, cpu=cpu, progress_bars=progress_bars, label=label)
    if name in sys.modules:
        return sys.modules[name]
    init = pathlib.Path(pack_dir).resolve() / "__init__.py"
    if not init.is_file():
        raise ValueError(f"pack folder {str(init.parent)!r} has no __init__.py")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        _forget(name)
        raise
    return mod


def submodule(pack: ModuleType, name: str) -> ModuleType:
    """``pack.<name>`` (e.g. ``tinywan``, which the pack's ``__init__`` does not import)."""
    return importlib.import_module(f"{pack.__name__}.{name}")
