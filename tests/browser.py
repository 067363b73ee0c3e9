"""Headless Debian Chromium for the MLflow UI tests.

* ``browse`` / ``browse_until``: the DOM of a page once its React app settled (``--dump-dom``),
  and a screenshot of it;
* ``Browser``: Chromium driven over the DevTools protocol on a pipe (no extra package, no
  port): open a page, wait for something to render, click, type, look inside frames and
  take screenshots.  ``--remote-debugging-pipe`` makes Chromium read commands on fd 3 and
  write replies on fd 4, each a JSON message ended by a NUL byte."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--remote-debugging-pipe"]


DUMP_FLAGS = [f for f in FLAGS if f != "--remote-debugging-pipe"] + ["--virtual-time-budget=20000",
                                                                    "--window-size=1600,1000"]


def browse(url: str, screenshot, profile) -> str:
    """The DOM of ``url`` once the React app settled; also saves a screenshot."""
    import pytest

    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run `make system-deps` (apt-get install chromium)")
    done = subprocess.run([CHROMIUM, *DUMP_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                           f"--screenshot={screenshot}", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def browse_until(url: str, wanted: str, screenshot, profile, attempts: int = 3) -> str:
    """Retry while the page has not rendered ``wanted`` yet (slow first API answers)."""
    for _ in range(attempts):
        dom = browse(url, screenshot, profile)
        if wanted in dom:
            break
    return dom


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, profile, width: int = 1600, height: int = 1000):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds():   # in the child: Chromium's pipe ends as fd 3 and 4
            # Both ends move above 4 first: a pipe end that already is fd 3 or 4 (a script
            # with no other files open) would otherwise be overwritten by the other dup2, or
            # keep its close-on-exec flag (dup2 onto itself clears nothing).
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                                      f"--window-size={width},{height}", "about:blank"],
                                     preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._id, self._buffer, self.session = 0, b"", None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.call("Page.enable")

    # -------------------------------------------------------------- protocol
    def call(self, method: str, timeout: float = 60, session: str | None = None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        session = session or self.session
        if session and not method.startswith("Target."):
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise BrowserError("no answer from Chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise BrowserError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    # -------------------------------------------------------------- page helpers
    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def js(self, expression: str, session: str | None = None):
        """The value of ``expression`` in the page (or in a frame's ``session``)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = self.call("Runtime.evaluate", session=session, **params)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, session: str | None = None):
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.js(expression, session)
            except BrowserError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for: {expression}")
            time.sleep(0.5)

    def text(self) -> str:
        return self.js("document.body.innerText") or ""

    def click_text(self, text: str, selector: str = "button, [role=button], [role=menuitem], "
                   "[role=option], [role=menuitemcheckbox], label, a, span") -> bool:
        """Click the innermost element matching ``selector`` whose text is ``text``."""
        return bool(self.js(f"""(() => {{
            const all = Array.from(document.querySelectorAll({json.dumps(selector)}))
                .filter(e => e.innerText && e.innerText.trim() === {json.dumps(text)} && e.offsetParent !== null);
            if (!all.length) return false;
            all[all.length - 1].click(); return true; }})()"""))

    def frame_sessions(self) -> list[str]:
        """A session in each out-of-process child frame (a sandboxed blob: frame is one)."""
        sessions = []
        for target in self.call("Target.getTargets")["targetInfos"]:
            if target["type"] == "iframe":
                sessions.append(self.call("Target.attachToTarget", targetId=target["targetId"],
                                          flatten=True)["sessionId"])
        return sessions

    def screenshot(self, path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except BrowserError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
