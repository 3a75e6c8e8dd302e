"""The admin port's dashboard (GET /) in headless Chromium, against the real server.

Chromium is driven through the DevTools protocol over --remote-debugging-pipe
(JSON messages on fds 3 and 4, so no websocket client and no extra port). The
test waits for the page to show the queues it filled, reads the DOM, changes
the queues and waits for the page to follow without a reload, and saves a
screenshot: to docs/dashboard.png with KESTREL_SCREENSHOT=1 (after
KESTREL_SCREENSHOT_SECONDS, default 60, of generated traffic so the charts have
something to show; 120 fills them), otherwise into the test's temporary directory.
"""

import base64
import fcntl
import html.parser
import json
import os
import pathlib
import select
import shutil
import subprocess
import threading
import time

import memcache
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "chromium")
WAIT = 30.0  # seconds for anything the page should show; a loaded machine is slow to start Chromium
# A name that is markup if the page ever inserts it as HTML (names may hold anything but
# '/', '.', '~' and whitespace).
ODD_NAME = "<b>odd&amp;\"'+q"


class Chromium:
    """Headless Chromium, commanded over the DevTools pipe; one page, attached."""

    def __init__(self, workdir, width=1280, height=900):
        binary = shutil.which(CHROMIUM)
        if binary is None:
            pytest.skip(f"{CHROMIUM} not found: install the Debian package `chromium` "
                        "(tests/system-packages does, as root or with sudo)")
        workdir.mkdir(parents=True, exist_ok=True)
        # Chromium reads commands from fd 3 and writes replies to fd 4. The pipe ends are
        # first moved above the fds bash is asked to fill, so no redirection clobbers another.
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        child_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
        os.close(cmd_r)
        os.close(res_w)
        self.log_path = workdir / "chromium.log"
        args = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            f"--user-data-dir={workdir / 'profile'}", f"--window-size={width},{height}",
            "--hide-scrollbars", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--disable-component-update", "--disable-default-apps", "--no-proxy-server",
            "--mute-audio", "about:blank",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-',
                 binary, *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(child_r, child_w))
        os.close(child_r)
        os.close(child_w)
        self._buf = b""
        self._next_id = 0
        self.events = []
        self.size = (width, height)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _read_message(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium; its log:\n" + self.log())
            chunk = os.read(self._res_r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe; its log:\n" + self.log())
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, session=False, timeout=WAIT, **params):
        """Sends one command (to the page's session if `session`), returns its result;
        events that arrive meanwhile are kept in self.events."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]

    def open(self, url):
        """Loads `url` and waits for its load event (Page.navigate returns once it commits)."""
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete'", f"{url} loaded")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, what, timeout=WAIT):
        """Evaluates `expression` every 100 ms until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not show {what} within {timeout:.0f} s; "
                                     f"its DOM:\n{self.dom()}")
            time.sleep(0.1)

    def dom(self):
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self, path):
        """Saves the page as PNG: the window's width, the content's height (at most the window's)."""
        height = min(self.evaluate("document.body.scrollHeight"), self.size[1])
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         clip={"x": 0, "y": 0, "width": self.size[0], "height": height, "scale": 1})
        pathlib.Path(path).write_bytes(base64.b64decode(data["data"]))

    def events_named(self, method):
        return [e["params"] for e in self.events if e.get("method") == method]

    def log(self):
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._res_r)


class Page(html.parser.HTMLParser):
    """What a DOM snapshot of the dashboard says: the queue rows' cells (raw data-value and
    shown text), the text of elements with an id, and the tags inside the queue table."""

    def __init__(self, markup):
        super().__init__(convert_charrefs=True)
        self.rows = {}           # queue name -> {column: {"value": str, "text": str}}
        self.by_id = {}          # id -> {"value": data-value or None, "text": str}
        self.table_tags = set()  # every tag seen inside <tbody>
        self._row = None
        self._cell = None
        self._ids = []           # open elements with an id: [(tag, id)]
        self._in_tbody = False
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self._in_tbody:
            self.table_tags.add(tag)
        if tag == "tbody":
            self._in_tbody = True
        if tag == "tr" and "queue" in (a.get("class") or "").split():
            self._row = self.rows.setdefault(a["data-queue"], {})
        if self._row is not None and tag == "td" and "data-col" in a:
            self._cell = self._row[a["data-col"]] = {"value": a.get("data-value"), "text": ""}
        if "id" in a:
            self.by_id[a["id"]] = {"value": a.get("data-value"), "text": ""}
            self._ids.append((tag, a["id"]))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False
        if tag == "tr":
            self._row = None
        if tag == "td":
            self._cell = None
        if self._ids and self._ids[-1][0] == tag:
            self._ids.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        for _, ident in self._ids:
            self.by_id[ident]["text"] += data


def queue_js(name, expression):
    """A JS expression over the queue row for `name` (bound as `row`), null without one."""
    return (f"(() => {{ const row = [...document.querySelectorAll('tr.queue')]"
            f".find(r => r.dataset.queue === {json.dumps(name)}); "
            f"return row ? ({expression}) : null; }})()")


def items_shown(name):
    return queue_js(name, "row.querySelector('[data-col=items]').dataset.value")


def rate_plotted(name, key):
    """The highest put or get rate the queue's sparkline shows."""
    return queue_js(name, f"Number(row.querySelector('svg.spark').dataset.max{key.capitalize()})")


def traffic(addr, seconds):
    """Varying put and get rates on a few queues, for a screenshot worth looking at."""
    mc = memcache.Client(["%s:%d" % addr])
    end = time.monotonic() + seconds
    start = time.monotonic()
    while time.monotonic() < end:
        t = time.monotonic() - start
        for i, queue in enumerate(("alpha", "beta", "orders+audit")):
            for _ in range(1 + int((i + 1) * 2 * (1 + (t // 15 + i) % 3))):
                mc.set(queue, b"x" * (64 << i))
            for _ in range(1 + int((i + 2) * (1 + (t // 10) % 2))):
                mc.get(queue)
        time.sleep(0.05)
    mc.disconnect_all()


@pytest.fixture
def browser(tmp_path):
    b = Chromium(tmp_path / "chromium")
    yield b
    b.close()


def test_dashboard_shows_queues_and_follows_them(server, browser, tmp_path):
    host, port = server.admin
    base = f"http://{host}:{port}/"
    mc = memcache.Client(["%s:%d" % server.memcache])
    for i in range(3):
        assert mc.set("alpha", f"a{i}")
    for i in range(5):
        assert mc.set("beta", f"b{i}")
    assert mc.set(ODD_NAME, "odd")

    browser.open(base)
    browser.wait_for("document.body.dataset.loaded === '1' && "
                     f"{items_shown('alpha')} === '3' && {items_shown('beta')} === '5'",
                     "alpha with 3 items and beta with 5")

    page = Page(browser.dom())
    assert page.rows["alpha"]["items"] == {"value": "3", "text": "3"}
    assert page.rows["beta"]["items"] == {"value": "5", "text": "5"}
    for name, count in (("alpha", 3), ("beta", 5)):
        row = page.rows[name]
        assert row["name"]["text"] == name
        assert set(row) == {"name", "items", "bytes", "put_rate", "get_rate", "open_reads",
                            "waiters", "age", "journal_size"}
        assert int(row["bytes"]["value"]) == count * 2
        assert row["open_reads"]["value"] == "0" and row["waiters"]["value"] == "0"
        assert int(row["journal_size"]["value"]) > 0
    # The odd name is shown as text: no <b> element, the exact characters in the cell.
    assert page.rows[ODD_NAME]["name"]["text"] == ODD_NAME
    assert page.rows[ODD_NAME]["items"]["value"] == "1"
    assert "b" not in page.table_tags
    assert page.by_id["status"]["text"] == "UP"
    assert float(page.by_id["uptime"]["value"]) >= 0
    assert int(page.by_id["connections"]["value"]) >= 1  # mc's connection

    # The page follows the server without a reload: a marker set now must survive.
    browser.evaluate("window.notReloaded = true")
    assert mc.set("alpha", "a3")
    assert mc.get("beta") == b"b0" and mc.get("beta") == b"b1"
    browser.wait_for(f"{items_shown('alpha')} === '4' && {items_shown('beta')} === '3' && "
                     f"{rate_plotted('alpha', 'put')} > 0 && {rate_plotted('beta', 'get')} > 0 && "
                     "Number(document.getElementById('chart-get').dataset.maxGet) > 0",
                     "alpha at 4 items and beta at 3, with their put and get rates charted")
    assert browser.evaluate("window.notReloaded === true")
    assert int(browser.evaluate("document.body.dataset.polls")) >= 2

    # Sorting: a click on the items header sorts largest first, a second click smallest first.
    order = "[...document.querySelectorAll('tr.queue')].map(r => r.dataset.queue)"
    click = "document.querySelector('th[data-col=items] button').click()"
    browser.evaluate(click)
    assert browser.evaluate(order) == ["alpha", "beta", ODD_NAME]
    browser.evaluate(click)
    assert browser.evaluate(order) == [ODD_NAME, "beta", "alpha"]

    # A deleted queue's row goes.
    assert mc.delete(ODD_NAME)
    browser.wait_for(f"{order}.join() === 'beta,alpha'", "the deleted queue's row gone")

    if os.environ.get("KESTREL_SCREENSHOT") == "1":
        # Taken while the traffic runs, so the last sample is not its end.
        seconds = float(os.environ.get("KESTREL_SCREENSHOT_SECONDS", "60"))
        browser.evaluate("document.querySelector('th[data-col=name] button').click()")
        load = threading.Thread(target=traffic, args=(server.memcache, seconds + 3))
        load.start()
        time.sleep(seconds)
        shot = ROOT / "docs" / "dashboard.png"
        browser.screenshot(shot)
        load.join()
    else:
        shot = tmp_path / "dashboard.png"
        browser.screenshot(shot)
    assert shot.stat().st_size > 10_000

    # Nothing but the admin port was asked for, and no script error was raised.
    urls = [e["request"]["url"] for e in browser.events_named("Network.requestWillBeSent")]
    assert urls and all(u.startswith(base) for u in urls), urls
    errors = browser.events_named("Runtime.exceptionThrown")
    assert not errors, errors


def test_dashboard_shows_disconnected_when_the_server_goes(server, browser):
    host, port = server.admin
    browser.open(f"http://{host}:{port}/")
    browser.wait_for("document.body.dataset.loaded === '1'", "its first poll")
    server.stop()
    browser.wait_for("document.getElementById('status').textContent === 'disconnected' && "
                     "document.body.dataset.connected === '0'", "'disconnected'")
    assert not browser.events_named("Runtime.exceptionThrown")
