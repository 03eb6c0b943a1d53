/* tstream dashboard: the list of streams and one stream, read from the hub's REST API and
   followed over SSE. Nothing an event carries is ever parsed as markup: text goes in
   through textContent (or Text nodes) and into the terminal through xterm.js's write. */
"use strict";

const ROOT = new URL(document.querySelector('meta[name="tstream-root"]').content, location.href);
const TYPES = [
  "output", "session_started", "session_ended", "command_started", "command_completed",
  "command_failed", "reasoning", "screenshot", "variable_update", "status", "error",
  "match", "json", "custom",
];
const LIST_PAGE = 100;
const LIST_REFRESH_MS = 2000;
const PAGE = 1000; // output lines asked for at a time
const CONTEXT = 20; // lines shown above a linked line
const SCROLLBACK = 20000;
const KEEP = 2000; // lines rewritten when the terminal's buffer is nearly full
const MAX_WINDOW = 3 * PAGE; // lines held when reading back through the history
const RING = 20000; // live lines kept to join a window to the live edge without a gap
const MAX_PENDING = 50000;
const TIMELINE_MAX = 1000;
const TYPED_HISTORY = 500; // typed events shown at first, at most
const TYPED_WINDOW = 10000; // offsets looked through for them at a time
const TYPED_KEEP = 5000;

const $ = (id) => document.getElementById(id);
const metrics = (window.tstreamMetrics = { keyLatencies: [], firstScreen: null });

class SignedOut extends Error {}

function url(path, params = {}) {
  const u = new URL(path, ROOT);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") u.searchParams.set(key, String(value));
  }
  return u;
}

async function getJSON(address) {
  const answer = await fetch(address, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (answer.status === 401) {
    showLogin();
    throw new SignedOut();
  }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.error ? body.error.message : `HTTP ${answer.status}`);
  return body;
}

/* An element whose children are nodes or strings; strings become Text nodes. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function setConnection(state, text) {
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = text || state;
}

function showLogin() {
  setConnection("signed-out", "signed out");
  $("list-view").hidden = true;
  $("stream-view").hidden = true;
  if ($("login").hidden) {
    $("login").hidden = false;
    $("login-token").focus();
  }
}

/* Signs in: the hub keeps the token in an HttpOnly cookie scoped to its root. */
async function signIn(token) {
  const answer = await fetch(url("login"), {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (answer.ok) return null;
  const body = await answer.json().catch(() => ({}));
  return body.error ? body.error.message : `HTTP ${answer.status}`;
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const refused = await signIn($("login-token").value);
  if (refused === null) location.reload();
  else $("login-error").textContent = refused;
});

/* A token given in the address is used once and taken out of it (and of the history). */
async function tokenFromAddress() {
  const params = new URLSearchParams(location.search);
  const token = params.get("access_token");
  if (token === null) return;
  params.delete("access_token");
  const rest = params.toString();
  window.history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  const refused = await signIn(token);
  if (refused !== null) $("login-error").textContent = refused;
}

function formatTime(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min ${s % 60} s`;
}

function brief(value, max = 300) {
  let text = typeof value === "string" ? value : JSON.stringify(value);
  if (text === undefined) text = "";
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/* Runs ``fn`` for a key and records, for the figures, the time from the key press to the
   frame that shows its effect. */
function timedKey(event, fn) {
  event.preventDefault();
  fn();
  requestAnimationFrame(() => metrics.keyLatencies.push(performance.now() - event.timeStamp));
}

function typingIn(target) {
  return target instanceof HTMLElement
    && target.matches('input:not([type="checkbox"]):not([type="radio"]), select, textarea');
}

/* -- the list ------------------------------------------------------------------------- */

function listPage() {
  document.title = "tstream: streams";
  $("list-view").hidden = false;
  const search = $("list-search"), status = $("list-status");
  let offset = 0, timer = null, asked = 0, debounce = null;

  async function refresh() {
    clearTimeout(timer);
    const mine = ++asked;
    try {
      const data = await getJSON(url("api/streams", {
        limit: LIST_PAGE, offset, q: search.value.trim(), status: status.value,
      }));
      if (mine !== asked) return;
      render(data);
      setConnection("live", "live");
      if (metrics.firstScreen === null) metrics.firstScreen = performance.now();
    } catch (err) {
      if (err instanceof SignedOut) return;
      setConnection("reconnecting", "reconnecting");
    }
    if (mine === asked) timer = setTimeout(refresh, LIST_REFRESH_MS);
  }

  function render(data) {
    const focused = document.activeElement && document.activeElement.closest("#list-rows")
      ? document.activeElement.dataset.id : null;
    $("list-rows").replaceChildren(...data.streams.map(row));
    if (focused !== null) {
      for (const link of $("list-rows").querySelectorAll("a")) if (link.dataset.id === focused) link.focus();
    }
    const shown = data.streams.length;
    const of = data.total === null ? "" : ` of ${data.total}`;
    $("list-count").textContent = shown ? `${offset + 1}–${offset + shown}${of}` : "no sessions";
    $("list-page").textContent = `page ${Math.floor(offset / LIST_PAGE) + 1}`;
    $("list-prev").disabled = offset === 0;
    $("list-next").disabled = !data.more;
  }

  function row(s) {
    const now = Date.now() / 1000;
    const end = s.ended || (s.status === "running" ? now : s.lastActivity);
    const link = el("a", { href: url(`streams/${encodeURIComponent(s.id)}`).href, dataset: { id: s.id } }, s.id);
    return el("tr", { dataset: { id: s.id } },
      el("td", {}, link),
      el("td", {}, el("span", { class: "badge", dataset: { status: s.status } }, s.status.replace("_", " "))),
      el("td", {}, el("code", {}, (s.command || []).join(" "))),
      el("td", {}, formatTime(s.created)),
      el("td", {}, formatDuration(end - s.created)),
      el("td", {}, s.exitStatus === null || s.exitStatus === undefined ? "" : String(s.exitStatus)),
      el("td", {}, String(s.events ?? s.lastOffset + 1)),
      el("td", {}, String(s.clients ?? 0)));
  }

  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { offset = 0; refresh(); }, 200);
  });
  $("list-filters").addEventListener("submit", (event) => { event.preventDefault(); offset = 0; refresh(); });
  status.addEventListener("change", () => { offset = 0; refresh(); });
  $("list-prev").addEventListener("click", () => { offset = Math.max(0, offset - LIST_PAGE); refresh(); });
  $("list-next").addEventListener("click", () => { offset += LIST_PAGE; refresh(); });
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typingIn(event.target)) return;
    if (event.key === "/") timedKey(event, () => search.focus());
  });
  refresh();
}

/* -- one stream ----------------------------------------------------------------------- */

function imageSource(value, mime) {
  // Only what the event itself carries: an absolute web address or inline image data.
  // A path (or a relative address) would point at files on the hub's side: never used.
  if (typeof value !== "string") return null;
  if (/^https?:\/\//i.test(value)) return value;
  if (/^data:image\/(png|jpeg|gif|webp|avif);base64,[A-Za-z0-9+/=\s]*$/i.test(value)) return value;
  if (mime !== undefined && /^image\/(png|jpeg|gif|webp|avif)$/i.test(mime) && /^[A-Za-z0-9+/=\s]+$/.test(value)) {
    return `data:${mime};base64,${value}`;
  }
  return null;
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function terminalTheme(dark) {
  return dark
    ? { background: "#0b0b0b", foreground: "#e8e8e8", cursor: "#0b0b0b", selectionBackground: "#5a4a00",
      red: "#ff8a80", brightRed: "#ffb4a9" }
    : { background: "#fbfbfb", foreground: "#1a1a1a", cursor: "#fbfbfb", selectionBackground: "#ffe082",
      black: "#1a1a1a", red: "#b3261e", green: "#116329", yellow: "#7a4d00", blue: "#0b4fa0",
      magenta: "#8a1f8a", cyan: "#0b5f66", white: "#555555", brightBlack: "#555555",
      brightRed: "#a1140c", brightGreen: "#0d5020", brightYellow: "#6a4200", brightBlue: "#083d80",
      brightMagenta: "#701870", brightCyan: "#084a50", brightWhite: "#333333" };
}

function streamPage() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const base = `api/streams/${encodeURIComponent(id)}/`;
  document.title = `tstream: ${id}`;
  $("title").textContent = id;
  $("stream-view").hidden = false;
  $("stream-download").href = url(`api/streams/${encodeURIComponent(id)}/export`).href;
  $("stream-download").setAttribute("download", `${id}.jsonl`);
  $("type-filters").replaceChildren(...TYPES.map((type) => {
    const box = el("input", { type: "checkbox", name: "type", value: type });
    box.checked = true;
    return el("label", {}, box, ` ${type.replace("_", " ")}`);
  }));

  const dark = matchMedia("(prefers-color-scheme: dark)");
  const term = new Terminal({
    convertEol: true, disableStdin: true, scrollback: SCROLLBACK, fontSize: 14, lineHeight: 1.2,
    cursorInactiveStyle: "none", theme: terminalTheme(dark.matches),
  });
  window.tstreamTerminal = term; // for the browser tests and the console
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open($("terminal"));
  dark.addEventListener("change", (event) => { term.options.theme = terminalTheme(event.matches); });
  let fitting = false;
  new ResizeObserver(() => {
    if (fitting) return;
    fitting = true;
    requestAnimationFrame(() => { fitting = false; fit.fit(); });
  }).observe($("terminal"));
  fit.fit();

  // What the terminal shows: ``events`` oldest first and, once written, ``ends[i]`` the
  // buffer line after event i (to tell which event a line belongs to).
  const view = {
    events: [], ends: [], generation: 0, tail: true, hasEarlier: false,
    paused: false, pending: [], busy: false, lastWritten: -1, lastOffset: -1,
  };
  const ring = [];
  const state = { source: null, cursor: -1, outputSeen: -1, typedSeen: -1, ended: false, backoff: 500 };
  const queue = [];
  let flushing = false;

  function filters() {
    let types = [...document.querySelectorAll('input[name="type"]:checked')].map((i) => i.value);
    const sources = [...document.querySelectorAll('input[name="source"]:checked')].map((i) => i.value);
    if (!sources.length) types = types.filter((t) => t !== "output");
    return { types, sources };
  }

  function filterParams(f, extra = {}) {
    const params = { ...extra };
    if (f.types.length < TYPES.length) params.eventTypes = f.types.join(",");
    if (f.sources.length === 1) params.sources = f.sources[0];
    return params;
  }

  function outputParams(extra) {
    const f = filters();
    return { eventTypes: "output", ...(f.sources.length === 1 ? { sources: f.sources[0] } : {}), ...extra };
  }

  /* -- the terminal -- */

  function reset() {
    view.generation++;
    view.events = [];
    view.ends = [];
    view.pending = [];
    view.lastWritten = -1;
    term.write("\x1bc");
    term.clear();
    return view.generation;
  }

  function write(event) {
    const data = event.data, generation = view.generation;
    const stderr = data.source === "stderr";
    const ended = () => {
      if (generation !== view.generation) return;
      const buffer = term.buffer.active;
      view.ends.push(buffer.baseY + buffer.cursorY + (buffer.cursorX > 0 ? 1 : 0));
    };
    const eol = data.partial ? "" : data.eol ?? "\n";
    if (data.raw) {
      // Bytes that are not UTF-8 go in as they are (their line end included).
      if (stderr) term.write("\x1b[31m");
      term.write(base64Bytes(data.raw));
      term.write(stderr ? "\x1b[39m" : "", ended);
    } else if (stderr) {
      // Red throughout, even after the line's own resets.
      term.write(`\x1b[31m${data.text.replace(/\x1b\[0?m/g, "\x1b[0;31m")}\x1b[39m${eol}`, ended);
    } else {
      term.write(data.text + eol, ended);
    }
    view.events.push(event);
    view.lastWritten = event.offset;
  }

  function written() {
    return new Promise((resolve) => term.write("", resolve));
  }

  function eventAtLine(line) {
    let low = 0, high = view.ends.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (view.ends[mid] > line) high = mid; else low = mid + 1;
    }
    return view.events[Math.min(low, view.events.length - 1)];
  }

  function lineOf(offset) {
    const index = view.events.findIndex((e) => e.offset >= offset);
    if (index <= 0) return 0;
    return view.ends[index - 1] ?? 0;
  }

  function showWindow() {
    const events = view.events;
    const text = events.length
      ? `lines at offsets ${events[0].offset}–${events[events.length - 1].offset}${view.tail ? "" : " (history)"}`
      : "no output";
    $("window").textContent = view.paused && view.pending.length ? `${text}; ${view.pending.length} new below` : text;
    $("earlier").disabled = !view.hasEarlier;
    const follow = $("follow");
    follow.setAttribute("aria-pressed", String(view.tail && !view.paused));
    follow.textContent = !view.tail ? "Go to newest" : view.paused ? "Paused" : "Following";
  }

  function outputPage(params) {
    return getJSON(url(`${base}history`, outputParams(params)));
  }

  function joinLive() {
    for (const event of ring) if (event.offset > view.lastWritten) write(event);
    view.tail = true;
  }

  /* Runs one load of the terminal at a time; a new window (``preempt``) replaces a load
     under way, whose writes its reset() makes stale. */
  async function loading(fn, preempt = false) {
    if (view.busy && !preempt) return;
    const mine = {};
    view.busy = mine;
    try {
      await fn();
    } finally {
      if (view.busy === mine) {
        view.busy = false;
        showWindow();
      }
    }
  }

  function showNewest() {
    return loading(async () => {
      const generation = reset();
      view.paused = false;
      const page = await outputPage({ lastN: PAGE });
      if (generation !== view.generation) return;
      for (const event of page.events) write(event);
      view.hasEarlier = page.count >= PAGE;
      view.lastOffset = page.lastOffset;
      joinLive();
      await written();
      term.scrollToBottom();
      if (metrics.firstScreen === null) metrics.firstScreen = performance.now();
    }, true);
  }

  function showAround(offset) {
    return loading(async () => {
      const generation = reset();
      view.tail = false;
      view.paused = true;
      const page = await outputPage({ after: Math.max(-1, offset - 1 - CONTEXT), limit: PAGE });
      if (generation !== view.generation) return;
      for (const event of page.events) write(event);
      view.hasEarlier = offset - CONTEXT > 0;
      view.lastOffset = page.lastOffset;
      if (page.count < PAGE) joinLive();
      await written();
      const line = lineOf(offset);
      term.scrollToLine(Math.max(0, line));
      term.select(0, line, term.cols);
      if (metrics.firstScreen === null) metrics.firstScreen = performance.now();
    }, true);
  }

  function earlier() {
    return loading(async () => {
      if (!view.hasEarlier || !view.events.length) return;
      const generation = view.generation;
      const first = view.events[0].offset;
      let got = [], below = first;
      // With a sparse filter the lines before may be far back: look further each time.
      for (let tries = 0; tries < 20 && !got.length && below > 0; tries++) {
        const step = tries === 0 ? PAGE : 10000;
        const after = Math.max(-1, below - 1 - step);
        const page = await outputPage({ after, limit: step });
        got = page.events.filter((e) => e.offset < below);
        below = after + 1;
      }
      if (generation !== view.generation) return;
      got = got.slice(-PAGE);
      view.hasEarlier = got.length > 0 && got[0].offset > 0 && below > 0;
      if (!got.length) return;
      const keep = got.concat(view.events);
      const cut = keep.length > MAX_WINDOW;
      const events = cut ? keep.slice(0, MAX_WINDOW) : keep;
      const wasTail = view.tail && !cut;
      reset();
      view.tail = false;
      for (const event of events) write(event);
      if (wasTail) joinLive();
      await written();
      view.paused = true;
      term.scrollToLine(view.ends[got.length - 1] ?? 0);
    });
  }

  function later() {
    return loading(async () => {
      if (view.tail) return;
      const generation = view.generation;
      const page = await outputPage({ after: view.lastWritten, limit: PAGE });
      if (generation !== view.generation) return;
      for (const event of page.events) write(event);
      if (page.count < PAGE) joinLive();
    });
  }

  function resume() {
    if (!view.tail) {
      showNewest();
      return;
    }
    view.paused = false;
    const held = view.pending;
    view.pending = [];
    for (const event of held) if (event.offset > view.lastWritten) write(event);
    term.scrollToBottom();
    showWindow();
  }

  function toggleFollow() {
    if (view.tail && !view.paused) view.paused = true;
    else resume();
    showWindow();
  }

  function atBottom() {
    const buffer = term.buffer.active;
    return buffer.viewportY >= buffer.baseY;
  }

  term.onScroll(() => {
    if (view.busy) return;
    if (!atBottom()) {
      if (!view.paused) { view.paused = true; showWindow(); }
    } else if (!view.tail) later();
    else if (view.paused) resume();
  });

  function liveOutput(event) {
    ring.push(event);
    if (ring.length > RING * 1.25) ring.splice(0, ring.length - RING);
    if (!view.tail || view.busy || event.offset <= view.lastWritten) return;
    if (view.paused) {
      view.pending.push(event);
      if (view.pending.length > MAX_PENDING) {
        // Too far behind to catch up line by line: the terminal leaves the live edge.
        view.pending = [];
        view.tail = false;
      }
      return;
    }
    const buffer = term.buffer.active;
    if (buffer.baseY + buffer.cursorY > SCROLLBACK - PAGE) {
      // Rewrite the newest lines rather than let xterm.js drop the oldest one by one.
      const keep = view.events.slice(-KEEP);
      reset();
      for (const old of keep) write(old);
      view.hasEarlier = true;
    }
    write(event);
  }

  // Clicking a line links to it by its event's offset.
  term.element.addEventListener("mouseup", (event) => {
    if (term.hasSelection() || !view.events.length) return;
    const screen = term.element.querySelector(".xterm-screen").getBoundingClientRect();
    const row = Math.floor(((event.clientY - screen.top) / screen.height) * term.rows);
    const found = eventAtLine(term.buffer.active.viewportY + Math.max(0, row));
    if (found) linkTo(found.offset);
  });

  function linkTo(offset) {
    window.history.replaceState(null, "", `#offset=${offset}`);
    const link = $("line-link");
    link.href = location.href;
    link.textContent = `Link to line (offset ${offset})`;
    link.hidden = false;
  }

  /* -- typed events -- */

  const commands = new Map();
  const variables = new Map();

  function timeline(event, cls, ...content) {
    const item = el("li", { class: `${event.type} ${cls}`.trim(), dataset: { offset: String(event.offset) } },
      el("span", { class: "kind" }, event.type.replace("_", " ")), ...content);
    const list = $("timeline");
    list.append(item);
    while (list.childElementCount > TIMELINE_MAX) list.firstElementChild.remove();
    return item;
  }

  function commandLabel(data) {
    const parts = [data.name];
    if (data.action) parts.push(data.action);
    if (data.parameters && Object.keys(data.parameters).length) parts.push(brief(data.parameters, 120));
    return parts.join(" ");
  }

  function commandRow(event) {
    const data = event.data;
    const cells = [el("td"), el("td", {}, commandLabel(data)), el("td"), el("td")];
    const row = el("tr", { dataset: { state: "running", offset: String(event.offset) } }, ...cells);
    setCommand(row, "running", "⋯ running", "", "");
    $("commands").append(row);
    while ($("commands").childElementCount > TIMELINE_MAX) $("commands").firstElementChild.remove();
    return row;
  }

  function setCommand(row, stateName, mark, time, result) {
    row.dataset.state = stateName;
    const [markCell, , timeCell, resultCell] = row.children;
    markCell.textContent = mark;
    markCell.setAttribute("aria-label", stateName);
    timeCell.textContent = time;
    resultCell.textContent = result;
  }

  function finishCommand(event) {
    const data = event.data;
    const key = data.call_id || data.name;
    let entry = commands.get(key);
    if (!entry) entry = { row: commandRow(event), ts: event.ts };
    commands.delete(key);
    const ok = event.type === "command_completed";
    const duration = data.duration ?? event.ts - entry.ts;
    const result = ok ? (data.result === null || data.result === undefined ? "" : brief(data.result, 200))
      : brief(data.error ?? "failed", 200);
    setCommand(entry.row, ok ? "ok" : "failed", ok ? "✓" : "✗", formatDuration(duration), result);
  }

  function setVariable(data) {
    let row = variables.get(data.name);
    const old = row ? row.children[1].textContent : undefined;
    if (!row) {
      row = el("tr", {}, el("td", {}, data.name), el("td"), el("td"));
      variables.set(data.name, row);
      $("variables").append(row);
    }
    row.children[1].textContent = brief(data.value, 200);
    const previous = data.previous !== null && data.previous !== undefined ? brief(data.previous, 200) : old;
    row.children[2].textContent = previous ?? "";
  }

  function screenshot(event) {
    const data = event.data;
    const thumb = imageSource(data.thumbnail, data.mime_type) || imageSource(data.url);
    const full = imageSource(data.url) || thumb;
    const caption = data.caption || "";
    const parts = [];
    if (thumb) {
      const image = el("img", { class: "thumb", alt: caption || "screenshot" });
      image.src = thumb;
      const open = el("button", { type: "button", class: "shot", "aria-label": `Show full size: ${caption || "screenshot"}` }, image);
      open.addEventListener("click", () => {
        $("viewer-image").src = full;
        $("viewer-image").alt = caption || "screenshot";
        $("viewer-caption").textContent = caption;
        $("viewer").showModal();
      });
      parts.push(open);
    } else if (data.path) {
      parts.push(el("span", { class: "text muted" }, `image file on the recording machine, not served: ${data.path}`));
    }
    if (caption) parts.push(el("span", { class: "text" }, caption));
    timeline(event, "", ...parts);
  }

  function showEnd(data) {
    state.ended = true;
    setConnection("ended", "ended");
    if (!data) return;
    const exit = data.exit_status !== undefined && data.exit_status !== null ? `exit status ${data.exit_status}` : "";
    $("stream-exit").textContent = [exit, data.duration ? formatDuration(data.duration) : ""].filter(Boolean).join(", ");
  }

  /* The typed events shown, oldest first, and the offset from which they are complete. */
  const panel = { events: [], from: 0 };

  function typed(event) {
    panel.events.push(event);
    if (panel.events.length > TYPED_KEEP * 1.25) {
      panel.events.splice(0, panel.events.length - TYPED_KEEP);
      panel.from = panel.events[0].offset;
      $("events-earlier").hidden = false;
    }
    showTyped(event);
  }

  function clearPanel() {
    commands.clear();
    variables.clear();
    $("commands").replaceChildren();
    $("variables").replaceChildren();
    $("timeline").replaceChildren();
  }

  function typedPage(params) {
    const types = filters().types.filter((t) => t !== "output");
    return getJSON(url(`${base}history`, { eventTypes: types.join(","), ...params }));
  }

  /* Typed events before those shown, a window of offsets at a time (a store finds them by
     reading every event of the window, so a long session is not read whole at once). */
  async function earlierEvents() {
    const button = $("events-earlier");
    button.disabled = true;
    try {
      const below = panel.from, after = Math.max(-1, below - 1 - TYPED_WINDOW);
      let got = [], cursor = after;
      for (let pages = 0; pages < TYPED_WINDOW / TYPED_HISTORY; pages++) {
        const page = await typedPage({ after: cursor, limit: TYPED_HISTORY });
        const older = page.events.filter((e) => e.offset < below);
        got = got.concat(older);
        if (older.length < TYPED_HISTORY) break;
        cursor = older[older.length - 1].offset;
      }
      panel.from = after + 1;
      panel.events = got.concat(panel.events);
      clearPanel();
      for (const event of panel.events) showTyped(event);
      button.hidden = panel.from <= 0;
    } finally {
      button.disabled = false;
    }
  }

  function showTyped(event) {
    const data = event.data || {};
    switch (event.type) {
      case "command_started":
        commands.set(data.call_id || data.name, { row: commandRow(event), ts: event.ts });
        break;
      case "command_completed":
      case "command_failed":
        finishCommand(event);
        break;
      case "variable_update":
        setVariable(data);
        break;
      case "status": {
        const badge = $("stream-state");
        badge.hidden = false;
        badge.textContent = data.message ? `${data.status}: ${data.message}` : data.status;
        timeline(event, "", el("span", { class: "text" }, badge.textContent));
        break;
      }
      case "reasoning":
        timeline(event, "", el("span", { class: "text" }, data.thought));
        break;
      case "error":
        timeline(event, "error", el("span", { class: "text" }, `${data.code || "error"}: ${data.message}`));
        break;
      case "screenshot":
        screenshot(event);
        break;
      case "session_started":
        $("stream-command").textContent = (data.command || []).join(" ");
        timeline(event, "", el("span", { class: "text" }, brief((data.command || []).join(" "))));
        break;
      case "session_ended":
        showEnd(data);
        timeline(event, data.exit_status ? "error" : "", el("span", { class: "text" }, $("stream-exit").textContent));
        break;
      case "match":
        timeline(event, data.level === "error" ? "error" : "", el("span", { class: "text" }, `${data.pattern}: ${data.text}`));
        break;
      default:
        timeline(event, "", el("span", { class: "text" }, brief(data, 500)));
    }
  }

  /* -- following -- */

  function schedule() {
    if (flushing) return;
    flushing = true;
    // rAF keeps work to one pass a frame; the timer covers a hidden tab.
    const done = setTimeout(flush, 250);
    requestAnimationFrame(() => { clearTimeout(done); flush(); });
  }

  function flush() {
    flushing = false;
    const events = queue.splice(0);
    for (const event of events) {
      if (event.type === "output") {
        if (event.offset <= state.outputSeen) continue;
        state.outputSeen = event.offset;
        liveOutput(event);
      } else {
        if (event.offset <= state.typedSeen) continue;
        state.typedSeen = event.offset;
        typed(event);
      }
    }
    if (events.length) showWindow();
  }

  function connect() {
    const f = filters();
    if (!f.types.length || state.ended) return;
    const source = new EventSource(url(`${base}sse`, filterParams(f, { lastEventId: state.cursor })));
    state.source = source;
    source.onopen = () => { state.backoff = 500; setConnection("live", "live"); };
    source.addEventListener("stream_event", (message) => {
      state.cursor = Math.max(state.cursor, Number(message.lastEventId));
      queue.push(JSON.parse(message.data));
      schedule();
    });
    source.addEventListener("notice", (message) => {
      const notice = JSON.parse(message.data);
      timeline({ type: "notice", offset: -1 }, "error", el("span", { class: "text" }, notice.message));
    });
    source.addEventListener("end", () => {
      source.close();
      flush();
      showEnd(null);
      refreshInfo();
    });
    source.addEventListener("error", () => {
      if (state.ended || source !== state.source) return;
      setConnection("reconnecting", "reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // EventSource gave up (an answer that is not a stream): try again ourselves,
        // unless the stream has ended.
        setTimeout(async () => {
          if (source !== state.source) return;
          const info = await refreshInfo().catch(() => null);
          if (info && !info.live && info.status !== "running") showEnd(null);
          else connect();
        }, state.backoff);
        state.backoff = Math.min(state.backoff * 2, 10000);
      }
    });
  }

  async function refreshInfo() {
    const info = await getJSON(url(`api/streams/${encodeURIComponent(id)}`));
    const badge = $("stream-status");
    badge.textContent = info.status.replace("_", " ");
    badge.dataset.status = info.status;
    if (!$("stream-command").textContent) $("stream-command").textContent = (info.command || []).join(" ");
    // The end event, when it came first, said more (its duration): keep that.
    if (info.exitStatus !== null && info.exitStatus !== undefined && !$("stream-exit").textContent) {
      $("stream-exit").textContent = `exit status ${info.exitStatus}`;
    }
    return info;
  }

  let starts = 0;

  async function start() {
    const mine = ++starts;
    if (state.source) state.source.close();
    state.source = null;
    state.ended = false;
    queue.length = 0;
    ring.length = 0;
    panel.events = [];
    clearPanel();
    $("events-earlier").hidden = true;
    setConnection("connecting", "connecting");
    try {
      // The stream's state and its typed events come while the output is drawn.
      const f = filters();
      const infoAsked = refreshInfo();
      let typedAfter = -1;
      const typedAsked = f.types.some((t) => t !== "output")
        ? infoAsked.then((info) => {
          typedAfter = Math.max(-1, info.lastOffset - TYPED_WINDOW);
          return typedPage({ after: typedAfter, lastN: TYPED_HISTORY });
        })
        : null;
      infoAsked.catch(() => {});
      typedAsked?.catch(() => {});
      state.outputSeen = -1;
      view.lastOffset = -1;
      if (f.types.includes("output")) {
        const target = /(?:^#|[?&])offset=(\d+)/.exec(location.hash) || /[?&]offset=(\d+)/.exec(location.search);
        await (target ? showAround(Number(target[1])) : showNewest());
        if (target) linkTo(Number(target[1]));
      } else {
        reset();
        showWindow();
      }
      const info = await infoAsked;
      let typedLast = null;
      if (typedAsked) {
        const page = await typedAsked;
        if (mine !== starts) return; // the filters changed meanwhile: that start goes on
        for (const event of page.events) typed(event);
        state.typedSeen = page.lastOffset;
        typedLast = page.lastOffset;
        panel.from = page.count >= TYPED_HISTORY ? page.events[0].offset : typedAfter + 1;
        $("events-earlier").hidden = panel.from <= 0;
      }
      const outputLast = f.types.includes("output") ? view.lastOffset : null;
      const marks = [typedLast, outputLast].filter((v) => v !== null);
      state.outputSeen = outputLast ?? -1;
      state.cursor = marks.length ? Math.min(...marks) : -1;
      if (state.typedSeen < state.cursor) state.typedSeen = state.cursor;
      if (mine !== starts) return;
      if (!info.live && info.status !== "running") showEnd(null);
      else connect();
    } catch (err) {
      if (mine === starts && !(err instanceof SignedOut)) {
        setConnection("error", `error: ${err.message}`);
        setTimeout(start, 3000);
      }
    }
  }

  /* -- search -- */

  const search = { text: "", after: -1 };

  async function searchMore() {
    const page = await getJSON(url(`${base}history`, filterParams(filters(), { searchText: search.text, after: search.after, limit: 50 })));
    const list = $("search-results");
    for (const event of page.events) {
      const text = event.type === "output" ? event.data.text : `${event.type} ${brief(event.data, 300)}`;
      const go = el("button", { type: "button" }, el("span", { class: "offset" }, `#${event.offset}`), text);
      go.addEventListener("click", () => goTo(event.offset));
      list.append(el("li", {}, go));
      search.after = event.offset;
    }
    list.hidden = list.childElementCount === 0;
    $("search-more").hidden = page.count < 50;
    $("search-count").textContent = list.childElementCount
      ? `${list.childElementCount}${page.count < 50 ? "" : "+"} matches` : "no match";
  }

  function goTo(offset) {
    linkTo(offset);
    showAround(offset);
  }

  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    search.text = $("search-text").value.trim();
    search.after = -1;
    $("search-results").replaceChildren();
    if (!search.text) {
      $("search-results").hidden = true;
      $("search-more").hidden = true;
      $("search-count").textContent = "";
      return;
    }
    searchMore();
  });
  $("search-more").addEventListener("click", searchMore);
  $("stream-filters").addEventListener("change", () => {
    const off = document.querySelectorAll('#stream-filters input:not(:checked)').length;
    $("filters-summary").textContent = off ? `Filters (${off} off)` : "Filters";
    start();
  });
  $("earlier").addEventListener("click", earlier);
  $("events-earlier").addEventListener("click", earlierEvents);
  $("follow").addEventListener("click", toggleFollow);
  window.addEventListener("hashchange", () => {
    const target = /offset=(\d+)/.exec(location.hash);
    if (target) showAround(Number(target[1]));
  });

  function keys(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return false;
    switch (event.key) {
      case "/": timedKey(event, () => $("search-text").focus()); return true;
      case "f": timedKey(event, toggleFollow); return true;
      case "End": timedKey(event, resume); return true;
      case "e": timedKey(event, earlier); return true;
      case "?": timedKey(event, () => { $("help").hidden = !$("help").hidden; }); return true;
      case "Escape": $("help").hidden = true; return true;
      case "PageUp": term.scrollPages(-1); return true;
      case "PageDown": term.scrollPages(1); return true;
      case "ArrowUp": term.scrollLines(-1); return true;
      case "ArrowDown": term.scrollLines(1); return true;
      default: return false;
    }
  }

  // In the terminal, our keys come first (it takes no input anyway).
  term.attachCustomKeyEventHandler((event) => {
    if (event.type === "keydown") keys(event);
    return false;
  });
  document.addEventListener("keydown", (event) => {
    if (typingIn(event.target) || (event.target instanceof HTMLElement && event.target.classList.contains("xterm-helper-textarea"))) return;
    if (["PageUp", "PageDown", "ArrowUp", "ArrowDown"].includes(event.key)) return;
    keys(event);
  });

  start();
}

tokenFromAddress().finally(() => {
  if (/\/streams\/[^/]+$/.test(location.pathname)) streamPage();
  else listPage();
});
