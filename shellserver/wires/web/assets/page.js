// The browser terminal: xterm.js on a WebSocket to /ws. The server does the echo, the line
// editor and everything else; this file connects, reports the size, and offers a reconnect
// when the socket closes. Frames to the server: "0" + keys, or "1" + "COLS ROWS"
// (docs/web-protocol.md; tests/test_web_protocol.py keeps the two in step).
"use strict";
(function () {
  // xterm.js adds <style> elements of its own; the page's CSP admits them by this nonce.
  const nonce = document.querySelector('meta[name="csp-nonce"]').content;
  const createElement = document.createElement.bind(document);
  document.createElement = function (name, options) {
    const element = createElement(name, options);
    if (String(name).toLowerCase() === "style") element.setAttribute("nonce", nonce);
    return element;
  };

  const term = new Terminal({ cursorBlink: true, scrollback: 5000, convertEol: false });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("terminal"));
  fit.fit();
  const banner = document.getElementById("banner");
  let socket = null;

  function send(text) {
    if (socket !== null && socket.readyState === WebSocket.OPEN) socket.send(text);
  }

  function sendSize() {
    send("1" + term.cols + " " + term.rows);
  }

  // The bar takes a row of the layout (page.css): the terminal is fitted again each time it
  // comes or goes, so the bar never covers a line of the terminal.
  function showBanner(shown) {
    banner.hidden = !shown;
    fit.fit();
  }

  function connect() {
    showBanner(false);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = new URL("ws", location.href);
    url.protocol = scheme;
    socket = new WebSocket(url.href);
    socket.onopen = function () {
      sendSize();
      term.focus();
    };
    socket.onmessage = function (event) {
      term.write(event.data);
    };
    socket.onclose = function () {
      socket = null;
      showBanner(true);
      document.getElementById("reconnect").focus();
    };
  }

  term.onData(function (data) {
    send("0" + data);
  });
  term.onResize(sendSize);
  window.addEventListener("resize", function () {
    fit.fit();
  });
  document.getElementById("reconnect").addEventListener("click", function () {
    term.reset();
    connect();
  });
  connect();
})();
