"""A minimal Chrome DevTools Protocol client over aiohttp, for Debian's headless ``chromium``.

No browser download: uses the system ``chromium`` (``apt-get install -y chromium``). The browser
is started with a fresh profile, its PID recorded, and stopped by that PID.
"""
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import aiohttp

from _comfyserver import free_port

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1600,1000", "--hide-scrollbars"]


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Chromium:
    def __init__(self, exe):
        self.exe, self.port = exe, free_port()
        self.profile = tempfile.mkdtemp(prefix="atelier_chromium_")
        self.proc = None

    def start(self, timeout=60):
        self.proc = subprocess.Popen([self.exe, *FLAGS, f"--user-data-dir={self.profile}",
                                      f"--remote-debugging-port={self.port}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("chromium did not open its DevTools port")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """CDP session on one page: ``await page.call(method, **params)``, ``await page.eval(js)``."""

    def __init__(self, ws):
        self.ws, self._id, self._waiting, self.events = ws, 0, {}, []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(data)
            elif "method" in data:
                self.events.append(data)

    async def call(self, method, timeout=60, **params):
        self._id += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiting[self._id] = fut
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        data = await asyncio.wait_for(fut, timeout)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def eval(self, js, timeout=60):
        r = await self.call("Runtime.evaluate", timeout=timeout, expression=js, awaitPromise=True,
                            returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error: {json.dumps(r['exceptionDetails'])[:1500]}")
        return r.get("result", {}).get("value")

    async def wait_for(self, js, timeout=60, interval=0.5):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = await self.eval(js)
            if v:
                return v
            await asyncio.sleep(interval)
        raise TimeoutError(f"timed out waiting for: {js}")

    async def screenshot(self, path):
        r = await self.call("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))
        return path

    def errors(self):
        out = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(e["params"]["exceptionDetails"])[:500])
            elif e["method"] == "Runtime.consoleAPICalled" and e["params"].get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description", "")))
                                    for a in e["params"].get("args", []))[:500])
        return out
