// The editor page. It follows mrmd-server's BASE_PATH rules so the page works behind the edge's
// /u/<uid>/ prefix: a <base href>, relative asset paths only, and window.MRMD_SERVER_URL set before any
// other script runs (mrmd's http-shim resolves every API, proxy, sync and events URL against it).

export interface PageInput {
  basePath: string;
  userName: string | null;
  runtimeAddress: string;
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (ch) => HTML_ESCAPES[ch] ?? ch);
}

/** A JS string literal that is also safe inside an HTML <script> element (no `</script>`, no `<!--`). */
export function jsStringLiteral(value: string): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

export function renderPage({ basePath, userName, runtimeAddress }: PageInput): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<base href="${escapeHtml(basePath)}">
<script>window.MRMD_SERVER_URL = location.origin + ${jsStringLiteral(basePath)}</script>
<title>mrmd editor-lite</title>
</head>
<body>
<h1>mrmd editor-lite</h1>
<p>User: <span id="user">${escapeHtml(userName ?? '(not in cloud mode)')}</span></p>
<p>Runtime: <span id="runtime">${escapeHtml(runtimeAddress)}</span></p>
<h2>Events</h2>
<ul id="events"></ul>
<script src="app.js"></script>
</body>
</html>
`;
}

// Served as app.js. Opens the events WebSocket relative to MRMD_SERVER_URL (as mrmd's http-shim does)
// and prints each message; text goes in through textContent only, never as markup.
export const APP_JS = `(function () {
  var eventsUrl = window.MRMD_SERVER_URL.replace(/^http/, 'ws') + 'events';
  var list = document.getElementById('events');
  var runtime = document.getElementById('runtime');
  var socket = new WebSocket(eventsUrl);
  socket.onmessage = function (message) {
    var item = document.createElement('li');
    item.textContent = String(message.data);
    list.appendChild(item);
    try {
      var parsed = JSON.parse(message.data);
      if (parsed.event === 'runtime-changed') runtime.textContent = parsed.data.host + ':' + parsed.data.port;
    } catch (e) { /* not JSON: already printed */ }
  };
  socket.onclose = function () {
    var item = document.createElement('li');
    item.textContent = '(events connection closed)';
    list.appendChild(item);
  };
})();
`;
