"""The browser terminal in a real browser: headless Chromium (Debian's) driven by Selenium.

The test starts Chromium itself through Debian's ``chromedriver`` (given by
path: nothing is downloaded), opens the page of a real server, registers,
runs ``who``, gets a ``write`` from a telnet session while a half-typed line
waits (the line survives), and saves a screenshot: into docs/img/ with
``SHELLSERVER_SCREENSHOT=1`` (how the one in the docs was made), otherwise into
the test's temp dir, so a test run leaves the work tree as it was. Skipped,
saying why, where Chromium, its driver or Selenium is missing; under CI
(``.ci/run`` installs them) a missing piece fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from realserver import RealServer, register

CLI = str(Path(sys.executable).with_name("shellserver"))

DOCS_SCREENSHOT = Path(__file__).parent.parent / "docs" / "img" / "web-terminal.png"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=960,600",
]  # fmt: skip


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    if shutil.which("chromium") is None:
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    why = _missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver"), log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screen(driver: Any) -> str:
    """What the terminal shows, row by row (xterm.js's DOM renderer)."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('.xterm-rows > div'), d => d.textContent)"
    )
    return "\n".join(row.replace("\u00a0", " ").rstrip() for row in rows)


def wait_for(driver: Any, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        shown = screen(driver)
        if text in shown:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not show {text!r}; it shows:\n{shown}")
        time.sleep(0.05)


def register_in_page(driver: Any, name: str) -> None:
    """``new`` at the page's ``login:``, then the name and the password twice, typed as a user
    would, up to the first prompt."""
    from selenium.webdriver.common.keys import Keys

    for line, prompt in [
        ("new", "Username:"),
        (name, "Password:"),
        ("correct horse", "Password again:"),
        ("correct horse", f"{name}@testhost:~$"),
    ]:
        type_keys(driver, line + Keys.ENTER)
        wait_for(driver, prompt)


def type_keys(driver: Any, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(text).perform()


@pytest.mark.integration
def test_the_page_in_a_real_browser(tmp_path: Path, browser: Any) -> None:
    tmp_shot = tmp_path / "web-terminal.png"
    from selenium.webdriver.common.keys import Keys

    srv = RealServer(tmp_path, "--web", "tcp:0:interface=127.0.0.1").start()
    try:
        browser.get(f"http://127.0.0.1:{srv.web_port}/")
        wait_for(browser, "login:")
        register_in_page(browser, "alice")
        assert "correct horse" not in screen(browser)  # passwords are not echoed
        type_keys(browser, "who" + Keys.ENTER)
        shown = wait_for(browser, "web/0")
        assert "alice" in shown
        bob = register(srv.port, "bob")
        type_keys(browser, "echo half")
        wait_for(browser, "$ echo half")
        bob.send_line("write alice hello from telnet")
        bob.expect("bob@testhost:~$ ")
        # The message, then the half-typed line drawn again under it.
        shown = wait_for(browser, "hello from telnet\nEOF\nalice@testhost:~$ echo half")
        assert shown.rstrip().endswith("EOF\nalice@testhost:~$ echo half"), shown
        shot = DOCS_SCREENSHOT if os.environ.get("SHELLSERVER_SCREENSHOT") else tmp_shot
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000  # a real picture, not an empty page
        type_keys(browser, " line" + Keys.ENTER)
        shown = wait_for(browser, "\nhalf line")
        # The page told the server its size (about 105 columns here): the editor does not
        # break a 93-column line at 80, as it would for a terminal of unknown size.
        type_keys(browser, "echo " + "x" * 70)
        wait_for(browser, "alice@testhost:~$ echo " + "x" * 70)
        type_keys(browser, Keys.ENTER)
        wait_for(browser, "\n" + "x" * 70 + "\nalice@testhost:~$")
        # Nothing the page did broke its Content-Security-Policy, or failed to load.
        problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert problems == []
        # Logging out closes the socket: the page offers to reconnect, and does.
        type_keys(browser, "logout" + Keys.ENTER)
        banner = browser.find_element("id", "banner")
        deadline = time.monotonic() + 10
        while not banner.is_displayed() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert banner.text.startswith("disconnected — reconnect")
        browser.find_element("id", "reconnect").click()
        wait_for(browser, "login:")
        bob.close()
    finally:
        srv.stop()


#: The reconnect bar's and the terminal's boxes, and those of the terminal's first and last
#: rows, as the browser laid them out (CSS pixels).
_GEOMETRY = """
const box = e => { const r = e.getBoundingClientRect();
                   return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
const rows = document.querySelectorAll('.xterm-rows > div');
return {bar: box(document.getElementById('banner')),
        screen: box(document.querySelector('.xterm-screen')),
        first: box(rows[0]), last: box(rows[rows.length - 1]),
        height: window.innerHeight};
"""


@pytest.mark.integration
def test_the_reconnect_bar_hides_no_line_of_the_terminal(tmp_path: Path, browser: Any) -> None:
    """When the socket closes, the bar takes a row of its own: the terminal is fitted below
    it, so its top line stays in view (it used to sit under the bar)."""
    from selenium.webdriver.common.keys import Keys

    srv = RealServer(tmp_path, "--web", "tcp:0:interface=127.0.0.1").start()
    try:
        browser.get(f"http://127.0.0.1:{srv.web_port}/")
        wait_for(browser, "login:")
        register_in_page(browser, "alice")
        # Fill the screen, so the top row holds text that the bar could cover.
        for i in range(40):
            type_keys(browser, f"echo line{i}" + Keys.ENTER)
        wait_for(browser, "\nline39\nalice@testhost:~$")
        before = browser.execute_script(_GEOMETRY)
        type_keys(browser, "logout" + Keys.ENTER)
        banner = browser.find_element("id", "banner")
        deadline = time.monotonic() + 10
        while not banner.is_displayed() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert banner.is_displayed()
        time.sleep(0.2)  # the fit after the bar appeared has been drawn
        g = browser.execute_script(_GEOMETRY)
        shot = tmp_path / "reconnect-bar.png"
        assert browser.save_screenshot(str(shot))
        bar, term = g["bar"], g["screen"]
        assert bar["bottom"] > bar["top"]  # the bar is shown, with a height
        assert bar["bottom"] <= term["top"], g  # and it covers no part of the terminal
        assert bar["bottom"] <= g["first"]["top"], g  # the first row starts below it
        assert g["last"]["bottom"] <= g["height"], g  # the last row still fits the window
        assert before["screen"]["top"] < bar["bottom"], (before, g)  # the terminal moved down
        shown = screen(browser)
        assert shown.splitlines()[0].strip(), shown  # the top row has text, and it is in view
        assert "logout" in shown
        # Reconnecting hides the bar and gives the terminal the whole window again.
        browser.find_element("id", "reconnect").click()
        wait_for(browser, "login:")
        again = browser.execute_script(_GEOMETRY)
        assert again["screen"]["top"] == before["screen"]["top"], (before, again)
    finally:
        srv.stop()


class CutProxy:
    """A TCP proxy in front of the web listener that the test can cut: ``down()`` resets every
    connection through it and refuses new ones (the network is gone), ``up()`` lets them
    through again. The browser only ever talks to the proxy."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up_now = True
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepts += 1
                if not self.up_now:
                    _reset(client)
                    continue
                try:
                    server = socket.create_connection(("127.0.0.1", self.target))
                except OSError:  # nothing listens there (a server restarting): a reset
                    _reset(client)
                    continue
                self.pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            self.up_now = False
            for client, server in self.pairs:
                _reset(client)
                _reset(server)
            self.pairs.clear()

    def up(self) -> None:
        with self.lock:
            self.up_now = True

    def close(self) -> None:
        self.listener.close()
        self.down()


def _reset(sock: socket.socket) -> None:
    """Close with a reset, as a dropped network looks once noticed: no close frame. The
    shutdown wakes the pump threads blocked on it, so the close really happens."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_WR)


@pytest.mark.integration
def test_the_page_comes_back_by_itself_to_its_session_with_what_was_sent(
    tmp_path: Path, browser: Any
) -> None:
    """The page's socket is cut under it: it shows ``reconnecting…``, tries again by itself,
    and once the network is back presents its token and is in its session again, showing
    the ``write`` that came meanwhile and the half-typed line, without anything typed."""
    from selenium.webdriver.common.keys import Keys

    srv = RealServer(tmp_path, "--web", "tcp:0:interface=127.0.0.1", "--linger", "300").start()
    proxy = CutProxy(srv.web_port)
    try:
        browser.get(f"http://127.0.0.1:{proxy.port}/")
        wait_for(browser, "login:")
        register_in_page(browser, "alice")
        type_keys(browser, "echo half")
        wait_for(browser, "alice@testhost:~$ echo half")
        token_of = "return sessionStorage.getItem('shellserver-resume-token')"
        token = browser.execute_script(token_of)
        assert token and len(token) == 22
        assert browser.execute_script("return localStorage.length") == 0
        logins = screen(browser).count("login:")
        accepted = proxy.accepts
        proxy.down()
        banner = browser.find_element("id", "banner")
        deadline = time.monotonic() + 10
        while not (banner.is_displayed() and proxy.accepts > accepted + 1):
            assert time.monotonic() < deadline, (
                "the page did not try again by itself",
                banner.is_displayed(),
                proxy.accepts - accepted,
                browser.get_log("browser"),
            )
            time.sleep(0.05)
        assert banner.text.startswith("reconnecting…"), banner.text
        # "reconnect now" tries at once (the next try by itself is seconds away), and keeps
        # the screen: this is the same session coming back, not a new login.
        tried = proxy.accepts
        browser.find_element("id", "reconnect").click()
        deadline = time.monotonic() + 0.9
        while proxy.accepts == tried:
            assert time.monotonic() < deadline, "reconnect now did not try at once"
            time.sleep(0.02)
        assert "alice@testhost:~$ echo half" in screen(browser)
        bob = register(srv.port, "bob")
        deadline = time.monotonic() + 10
        while True:
            bob.send_line("who")
            if "(detached)" in bob.expect("bob@testhost:~$ "):
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        bob.send_line("write alice sent while the page was away")
        bob.expect("bob@testhost:~$ ")
        proxy.up()
        shown = wait_for(browser, "sent while the page was away", timeout=40)
        shown = wait_for(browser, "---\nalice@testhost:~$ echo half")
        assert "--- 1 message while you were away ---" in shown
        assert shown.count("login:") == logins  # no login asked, nor a question
        assert "Resume it?" not in shown and "Password" not in shown.split("half")[-1]
        assert not banner.is_displayed()
        renewed = browser.execute_script(token_of)
        assert renewed and renewed != token  # spent, and a new one for the next drop
        bob.send_line("who")
        listing = bob.expect("bob@testhost:~$ ")
        assert "(detached)" not in listing and listing.count("alice ") == 1
        # It is the same session, live: typing goes on where the line was left.
        type_keys(browser, "ed" + Keys.ENTER)
        wait_for(browser, "\nhalfed\nalice@testhost:~$")
        # A reload keeps the tab's sessionStorage: the new page resumes the session too.
        browser.refresh()
        shown = wait_for(browser, "alice@testhost:~$")
        assert "login:" not in shown and "Last login" not in shown
        type_keys(browser, "echo after reload" + Keys.ENTER)
        wait_for(browser, "\nafter reload\nalice@testhost:~$")
        # A logout is on purpose: the page does not come back, and keeps no token.
        type_keys(browser, "logout" + Keys.ENTER)
        banner = browser.find_element("id", "banner")  # the reloaded page's
        deadline = time.monotonic() + 10
        while not banner.text.startswith("disconnected — reconnect"):
            assert time.monotonic() < deadline, banner.text
            time.sleep(0.05)
        assert browser.execute_script(token_of) is None
        problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert all("WebSocket" in p or "ws?resume" in p for p in problems), problems
        bob.close()
    finally:
        proxy.close()
        srv.stop()


@pytest.mark.integration
def test_the_page_comes_back_by_itself_after_shellserver_restart(
    tmp_path: Path, browser: Any
) -> None:
    """``shellserver restart`` parks the session and stops the server; it is started again
    (as systemd would) and the page, which never reloads, takes its session back by itself
    with a ``write`` sent while the server was away, nothing typed."""
    from selenium.webdriver.common.keys import Keys

    data = tmp_path / "data"
    args = ("--web", "tcp:0:interface=127.0.0.1", "--linger", "300")
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = RealServer(first_dir, "--data", str(data), *args).start()
    first.data = data
    proxy = CutProxy(first.web_port)
    second: RealServer | None = None
    try:
        browser.get(f"http://127.0.0.1:{proxy.port}/")
        wait_for(browser, "login:")
        register_in_page(browser, "alice")
        type_keys(browser, "echo half")
        wait_for(browser, "alice@testhost:~$ echo half")
        logins = screen(browser).count("login:")
        done = subprocess.run(
            [CLI, "--data", str(data), "restart"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert first.proc is not None and first.proc.wait(20) == 0
        second = RealServer(second_dir, "--data", str(data), *args).start()
        second.data = data
        deadline = time.monotonic() + 10
        while "detached again, resumable" not in second.log_text():
            assert time.monotonic() < deadline, second.log_text()
            time.sleep(0.05)
        bob = register(second.port, "bob")
        bob.send_line("write alice sent while the server restarted")
        bob.expect("bob@testhost:~$ ")
        banner = browser.find_element("id", "banner")  # the page tries by itself, and waits
        deadline = time.monotonic() + 15
        while not (banner.is_displayed() and banner.text.startswith("reconnecting")):
            assert time.monotonic() < deadline, banner.text
            time.sleep(0.05)
        proxy.target = second.web_port
        shown = wait_for(browser, "sent while the server restarted", timeout=45)
        shown = wait_for(browser, "---\nalice@testhost:~$ echo half")
        assert "The server is restarting; reconnect to resume this session." in shown
        assert shown.count("login:") == logins and "Resume it?" not in shown
        type_keys(browser, "ed" + Keys.ENTER)
        wait_for(browser, "\nhalfed\nalice@testhost:~$")
    finally:
        proxy.close()
        first.stop()
        if second is not None:
            second.stop()
