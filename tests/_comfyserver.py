"""A real ComfyUI server for end-to-end tests, started in a throw-away base directory.

Nothing is written into the host tree: the server runs with ``--base-directory BASE``, so
``custom_nodes``, ``models``, ``input``, ``output``, ``temp`` and ``user`` all live under BASE.
The pack is linked as ``BASE/custom_nodes/ComfyUI-Atelier`` (a symlink to the repository).
A second, test-only custom node (``atelier_e2e_stubs``) provides a CLIP-free text encoder,
because the host's text encoders (UMT5-XXL, OpenCLIP-H, T5-XXL + CLIP-L) have fixed full-size configs that no
tiny test file can satisfy; with a ``tiny_models.json`` the tests write beside it, it also gives the tiny FLUX
file its tiny head count and widths after the host's detection (which hard-codes FLUX.1's). The server is started with its PID recorded and stopped by that PID.
"""
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from _testenv import REPO

PACK_FOLDER = "ComfyUI-Atelier"

STUB_NODES = '''
"""Test-only nodes for the Atelier end-to-end tests (never shipped)."""
import hashlib
import json
import os
import torch


class AtelierE2ETextEncode:
    """CONDITIONING from a hash of the text: stands in for CLIPLoader + CLIPTextEncode."""
    CATEGORY = "Atelier/Tests"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"multiline": True, "default": "", "tooltip": "prompt"}),
            "width": ("INT", {"default": 4096, "min": 8, "max": 8192, "tooltip": "embedding width"}),
            "tokens": ("INT", {"default": 8, "min": 1, "max": 1024, "tooltip": "sequence length"}),
        }, "optional": {
            "pooled": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": "pooled_output width (0: none)"}),
        }}

    def encode(self, text, width, tokens, pooled=0):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        g = torch.Generator().manual_seed(seed)
        emb = torch.randn(1, tokens, width, generator=g) * 0.5
        opts = {"pooled_output": torch.randn(1, pooled, generator=g)} if pooled else {}
        return ([[emb, opts]],)


NODE_CLASS_MAPPINGS = {"AtelierE2ETextEncode": AtelierE2ETextEncode}

_TINY = os.path.join(os.path.dirname(__file__), "tiny_models.json")


def _install_tiny_detection():
    """Tiny model files of families whose detection hard-codes full-size values (FLUX: heads, widths): after
    the host's own detection of a state dict whose marker tensor has the listed shape (only the files the
    tests write), the listed unet_config keys get the tiny values (tests/_families._tiny_detection, in the
    server)."""
    if not os.path.isfile(_TINY):
        return
    import comfy.model_detection as md
    with open(_TINY) as f:
        specs = json.load(f)
    real = md.model_config_from_unet

    def model_config_from_unet(state_dict, unet_key_prefix, *a, **kw):
        mc = real(state_dict, unet_key_prefix, *a, **kw)
        for sp in specs if mc is not None else ():
            t = state_dict.get(unet_key_prefix + sp["marker"])
            if t is not None and list(t.shape) == sp["shape"] and mc.unet_config.get("image_model") == sp["image_model"]:
                mc.unet_config.update(sp["unet_config"])
                for k in sp["drop"]:
                    mc.unet_config.pop(k, None)
        return mc

    md.model_config_from_unet = model_config_from_unet


_install_tiny_detection()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base_dir(root=None):
    """A fresh ComfyUI base directory with the pack and the stub node pack in custom_nodes."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="atelier_e2e_", dir=root))
    cn = base / "custom_nodes"
    cn.mkdir()
    os.symlink(REPO, cn / PACK_FOLDER, target_is_directory=True)
    stub = cn / "atelier_e2e_stubs"
    stub.mkdir()
    (stub / "__init__.py").write_text(STUB_NODES)
    for d in ("models/diffusion_models", "models/vae", "models/checkpoints", "models/text_encoders",
              "input", "output", "temp", "user"):
        (base / d).mkdir(parents=True, exist_ok=True)
    return base


class ComfyServer:
    """``python main.py --cpu --listen 127.0.0.1 --port P --base-directory BASE`` as a child process."""

    def __init__(self, comfy_dir, base, port=None, python=None):
        self.comfy_dir = pathlib.Path(comfy_dir)
        self.base = pathlib.Path(base)
        self.port = port or free_port()
        self.python = python or sys.executable
        self.proc = None
        self.pid = None
        self.log_path = self.base / "server.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _shim_old_templates(self, env):
        """ComfyUI <= 0.3.x serves ``comfyui_workflow_templates/templates``; the split packages that newer
        hosts install have no such folder and the old server refuses to start. Give the child process an
        empty stand-in package (the pack's own templates come from /api/workflow_templates anyway)."""
        fm = self.comfy_dir / "app" / "frontend_management.py"
        if not fm.is_file() or '(comfyui_workflow_templates) / "templates"' not in fm.read_text():
            return
        try:
            import importlib.util
            spec = importlib.util.find_spec("comfyui_workflow_templates")
            if spec and spec.submodule_search_locations and any(
                    (pathlib.Path(p) / "templates").is_dir() for p in spec.submodule_search_locations):
                return
        except ImportError:
            pass
        shim = self.base / "shims" / "comfyui_workflow_templates"
        (shim / "templates").mkdir(parents=True, exist_ok=True)
        (shim / "__init__.py").write_text("")
        env["PYTHONPATH"] = os.pathsep.join([str(self.base / "shims"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    def start(self, timeout=240):
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self._shim_old_templates(env)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.pid = self.proc.pid
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self):
        """Stop the server by its recorded PID (SIGTERM to its own session, then SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        self.proc = None

    def log_tail(self, n=4000):
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- HTTP ------------------------------------------------------------------------------
    def request(self, path, data=None, timeout=30):
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path, timeout=30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def queue(self, prompt, client_id="atelier-e2e"):
        """POST /prompt; returns (status, json body)."""
        status, body = self.request("/prompt", {"prompt": prompt, "client_id": client_id})
        return status, json.loads(body or b"{}")

    def wait(self, prompt_id, timeout=300):
        """Wait for a prompt in /history; returns its history entry."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = self.get_json(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                st = h[prompt_id]["status"]
                if st.get("completed") or st.get("status_str") in ("success", "error"):
                    return h[prompt_id]
            if self.proc.poll() is not None:
                raise RuntimeError(f"server died:\n{self.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log_tail()}")


def cleanup(base):
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def running_server(comfy_dir, prepare):
    """A :class:`ComfyServer` of ``comfy_dir`` on a fresh base directory (:func:`make_base_dir`):
    ``prepare(base)`` writes what the test needs into it, then the server starts; on leaving, the
    server is stopped and the base directory removed (also when ``prepare`` or the start fails)."""
    base = make_base_dir()
    srv = ComfyServer(comfy_dir, base)
    try:
        prepare(base)
        srv.start()
        yield srv
    finally:
        srv.stop()
        cleanup(base)
