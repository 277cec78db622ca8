// The browser terminal: xterm.js on a WebSocket to /ws. The server does the echo, the line
// editor and everything else; this file connects, reports the size, keeps the resume token
// and reconnects by itself when the socket drops. Frames to the server: "2" + token (first),
// "0" + keys, or "1" + "COLS ROWS"; from it: text frames of output, binary frames of
// "2" + a new token (docs/web-protocol.md; tests/test_web_protocol.py keeps them in step).
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
  const bannerText = document.getElementById("banner-text");
  const reconnectButton = document.getElementById("reconnect");
  // The resume token lives in this tab's sessionStorage only: a reload keeps it, another
  // tab or a closed one never sees it. It is spent as it is sent.
  const TOKEN = "shellserver-resume-token";
  // Close codes the server sends when it ends the connection on purpose (logout, kick,
  // shutdown, a failed login; a frame it refuses): nothing to come back to. A restart's close
  // (its own code) is not among them: the page comes back as after a drop.
  const ON_PURPOSE = [1000, 1003, 1009];
  const MAX_DELAY = 30;
  const decoder = new TextDecoder();
  let socket = null;
  let retries = 0;
  let timer = null;
  // True from a lost socket until the page is connected again: the screen is kept.
  let coming = false;

  function send(text) {
    if (socket !== null && socket.readyState === WebSocket.OPEN) socket.send(text);
  }

  function sendSize() {
    send("1" + term.cols + " " + term.rows);
  }

  function storage() {
    try {
      return window.sessionStorage;
    } catch (e) {
      return null; // storage switched off: the page still works, without resuming
    }
  }

  function takeToken() {
    const store = storage();
    if (store === null) return "";
    const token = store.getItem(TOKEN) || "";
    store.removeItem(TOKEN);
    return token;
  }

  function keepToken(token) {
    const store = storage();
    if (store !== null) store.setItem(TOKEN, token);
  }

  // The bar takes a row of the layout (page.css): the terminal is fitted again each time it
  // comes or goes, so the bar never covers a line of the terminal.
  function showBanner(text, button, waiting) {
    banner.hidden = text === null;
    if (text !== null) {
      bannerText.textContent = text;
      reconnectButton.textContent = button;
      banner.className = waiting ? "waiting" : "";
    }
    fit.fit();
  }

  function connect() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (socket !== null) {
      // A try still under way (the button pressed meanwhile): it must not open behind us.
      const old = socket;
      socket = null;
      old.onopen = old.onmessage = old.onclose = null;
      old.close();
    }
    const url = new URL("ws?resume", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    socket = ws;
    ws.onopen = function () {
      retries = 0;
      coming = false;
      showBanner(null);
      sendSize(); // first, so a resumed session is drawn at this width
      send("2" + takeToken());
      term.focus();
    };
    ws.onmessage = function (event) {
      if (typeof event.data === "string") {
        term.write(event.data);
        return;
      }
      const text = decoder.decode(event.data);
      if (text[0] === "2") keepToken(text.slice(1));
    };
    ws.onclose = function (event) {
      if (socket !== ws) return;
      socket = null;
      if (ON_PURPOSE.includes(event.code)) {
        coming = false;
        takeToken(); // the session is over: its token names nothing
        showBanner("disconnected — ", "reconnect", false);
        reconnectButton.focus();
        return;
      }
      // Lost (no close frame, or a server going away): try again after 1, 2, 4 … 30 s.
      const delay = Math.min(MAX_DELAY, 2 ** retries);
      retries += 1;
      coming = true;
      showBanner("reconnecting… ", "reconnect now", true);
      timer = setTimeout(connect, delay * 1000);
    };
  }

  term.onData(function (data) {
    send("0" + data);
  });
  term.onResize(sendSize);
  window.addEventListener("resize", function () {
    fit.fit();
  });
  reconnectButton.addEventListener("click", function () {
    if (!coming) term.reset(); // after a goodbye: a new login on a clean screen
    connect();
  });
  connect();
})();
