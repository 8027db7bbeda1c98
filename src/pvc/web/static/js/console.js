// The console page (templates/console/console.html): the serial console and the VNC display, each
// over a websocket to pvcapid that carries the session's CSRF token (wsproxy checks it with the
// Origin and the session). Guest output is text only: terminal escapes are removed and the rest is
// added as text nodes, never as HTML. A closed socket is reopened (the VM may have moved), unless
// pvcapid refused it for a reason that will not change.
import RFB from '../vendor/novnc/core/rfb.js';

const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || '';
const MAX_CHARS = 200000;            // characters kept on screen
const FINAL = new Set([1008, 4404, 4409, 4503]);

function socketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}?csrf=${encodeURIComponent(csrf)}`;
}

// Tab is left to the browser (moving focus on: no keyboard trap); Ctrl+I types a tab.
// CSI / OSC / other ESC sequences, and control characters other than newline and tab.
const ANSI = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]/g;

export function plain(text) {
  return text.replace(/\r\n/g, '\n').replace(/\r/g, '').replace(ANSI, '');
}

const KEYS = {Enter: '\r', Backspace: '\x7f', Escape: '\x1b', ArrowUp: '\x1b[A',
  ArrowDown: '\x1b[B', ArrowRight: '\x1b[C', ArrowLeft: '\x1b[D', Home: '\x1b[H', End: '\x1b[F',
  Delete: '\x1b[3~', PageUp: '\x1b[5~', PageDown: '\x1b[6~'};

function keyBytes(event) {
  if (event.metaKey || event.altKey) return null;
  if (event.ctrlKey) {
    if (event.key.length === 1 && /[a-z@\[\\\]^_]/i.test(event.key)) {
      return String.fromCharCode(event.key.toUpperCase().charCodeAt(0) & 0x1f);
    }
    return null;
  }
  if (KEYS[event.key] !== undefined) return KEYS[event.key];
  return event.key.length === 1 ? event.key : null;
}

function serial() {
  const screen = document.getElementById('serial-screen');
  const state = document.getElementById('serial-state');
  if (!screen || screen.dataset.running !== 'yes') return;
  const encoder = new TextEncoder();
  let ws = null;
  let decoder = null;
  let retry = 1000;

  const show = (text) => {
    const atBottom = screen.scrollTop + screen.clientHeight >= screen.scrollHeight - 4;
    screen.append(document.createTextNode(plain(text)));
    if (screen.textContent.length > MAX_CHARS) {
      screen.textContent = screen.textContent.slice(-MAX_CHARS / 2);
    }
    if (atBottom) screen.scrollTop = screen.scrollHeight;
  };
  const send = (text) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(text));
  };
  const connect = () => {
    state.textContent = 'Connecting…';
    decoder = new TextDecoder('utf-8');
    ws = new WebSocket(socketUrl(screen.dataset.socket));
    ws.binaryType = 'arraybuffer';
    ws.addEventListener('open', () => { state.textContent = 'Connected.'; retry = 1000; });
    ws.addEventListener('message', (event) => {
      show(typeof event.data === 'string' ? event.data : decoder.decode(event.data, {stream: true}));
    });
    ws.addEventListener('close', (event) => {
      if (FINAL.has(event.code)) {
        state.textContent = `Not connected: ${event.reason || 'refused by pvcapid'}.`;
        return;
      }
      state.textContent = `Disconnected${event.reason ? ` (${event.reason})` : ''}; reconnecting…`;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    });
  };
  screen.addEventListener('keydown', (event) => {
    const bytes = keyBytes(event);
    if (bytes === null) return;
    event.preventDefault();
    send(bytes);
  });
  screen.addEventListener('paste', (event) => {
    event.preventDefault();
    send((event.clipboardData.getData('text') || '').replace(/\r?\n/g, '\r'));
  });
  document.body.dataset.serialReady = 'yes';
  connect();
}

function vnc() {
  const screen = document.getElementById('vnc-screen');
  const state = document.getElementById('vnc-state');
  if (!screen || screen.dataset.enabled !== 'yes') return;
  let retry = 1000;
  const connect = () => {
    state.textContent = 'Connecting…';
    const rfb = new RFB(screen, socketUrl(screen.dataset.socket), {wsProtocols: ['binary']});
    rfb.scaleViewport = true;
    rfb.addEventListener('connect', () => { state.textContent = 'Connected.'; retry = 1000; });
    rfb.addEventListener('securityfailure', (event) => {
      state.textContent = `Not connected: ${event.detail.reason || 'security negotiation failed'}.`;
    });
    rfb.addEventListener('disconnect', () => {
      state.textContent = 'Disconnected; reconnecting…';
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    });
  };
  connect();
}

serial();
vnc();
