// The explorer page's script. It uses only the public API; chain values are always written
// with textContent (never as HTML). The live list reads /api/v1/events with fetch, since the
// browser's own SSE client cannot send X-API-Key, and resumes by the last event id itself.
"use strict";

const KEY_NAME = "block-manager-read-key";
const MAX_ROWS = 25;
const state = { lastId: null, retryMs: 2000, controller: null };

function $(id) { return document.getElementById(id); }

function readKey() {
  try { return sessionStorage.getItem(KEY_NAME) || ""; } catch (_) { return ""; }
}

function headers(extra) {
  const h = Object.assign({ "Accept": "application/json" }, extra || {});
  const key = readKey();
  if (key) { h["X-API-Key"] = key; }
  return h;
}

async function getJson(path) {
  const res = await fetch(path, { headers: headers(), cache: "no-store" });
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  return { status: res.status, body: body };
}

function text(id, value) {
  $(id).textContent = value === null || value === undefined ? "—" : String(value);
}

function problem(r) {
  const d = r.body && r.body.detail;
  return d && d.error ? d.error + " (" + d.error_code + ")" : "HTTP " + r.status;
}

async function refresh() {
  try {
    const h = await getJson("/health");
    const status = h.body && h.body.status ? h.body.status : "HTTP " + h.status;
    text("health", status);
    $("health").className = status;
    const c = await getJson("/api/v1/chain/status");
    if (c.status === 200) {
      text("mode", c.body.mode);
      text("tip-height", c.body.height);
      text("tip-hash", c.body.tip_hash);
      text("tip-time", c.body.tip_timestamp);
    } else {
      text("mode", problem(c));
    }
    const s = await getJson("/api/v1/sync/status");
    if (s.status === 200) {
      const b = s.body;
      const lag = b.lag === undefined || b.lag === null ? "" : ", lag " + b.lag;
      text("sync", b.state + lag);
    } else {
      text("sync", problem(s));
    }
  } catch (e) {
    text("health", "unreachable");
  }
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  if (cls) { td.className = cls; }
  row.appendChild(td);
}

function addBlock(h) {
  const body = $("blocks");
  for (const old of Array.from(body.children)) {
    if (Number(old.dataset.height) >= h.height) { old.remove(); }
  }
  const row = document.createElement("tr");
  row.dataset.height = String(h.height);
  row.dataset.hash = String(h.hash);
  row.className = "fresh";
  cell(row, h.height);
  cell(row, h.hash, "hash");
  cell(row, h.timestamp);
  cell(row, h.producer);
  cell(row, h.transaction_count);
  body.insertBefore(row, body.firstChild);
  while (body.children.length > MAX_ROWS) { body.lastChild.remove(); }
  setTimeout(function () { row.className = ""; }, 1500);
  text("tip-height", h.height);
  text("tip-hash", h.hash);
  text("tip-time", h.timestamp);
}

function dropAbove(height) {
  for (const old of Array.from($("blocks").children)) {
    if (Number(old.dataset.height) > height) { old.remove(); }
  }
}

function onEvent(ev) {
  if (ev.id !== null) { state.lastId = ev.id; }
  if (ev.retry !== null) { state.retryMs = ev.retry; }
  if (ev.data === null) { return; }
  let data;
  try { data = JSON.parse(ev.data); } catch (_) { return; }
  if (ev.type === "block") {
    addBlock(data);
  } else if (ev.type === "reorg") {
    dropAbove(data.ancestor.height);
    text("stream-state", "reorg to " + data.ancestor.height + " (depth " + data.depth + ")");
  } else if (ev.type === "resync") {
    $("blocks").replaceChildren();
    state.lastId = null;
  }
}

// One Server-Sent Events frame: its fields, from the lines before a blank line.
function parseFrame(lines) {
  const ev = { id: null, type: "message", data: null, retry: null };
  const data = [];
  for (const line of lines) {
    if (line === "" || line.startsWith(":")) { continue; }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) { value = value.slice(1); }
    if (field === "id") { ev.id = value; }
    else if (field === "event") { ev.type = value; }
    else if (field === "data") { data.push(value); }
    else if (field === "retry" && /^\d+$/.test(value)) { ev.retry = Number(value); }
  }
  if (data.length) { ev.data = data.join("\n"); }
  return ev;
}

async function stream() {
  const extra = { "Accept": "text/event-stream" };
  if (state.lastId) { extra["Last-Event-ID"] = state.lastId; }
  state.controller = new AbortController();
  const res = await fetch("/api/v1/events?thin=1", {
    headers: headers(extra), cache: "no-store", signal: state.controller.signal,
  });
  if (res.status !== 200) {
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    throw new Error(problem({ status: res.status, body: body }));
  }
  text("stream-state", "live");
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let lines = [];
  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) { break; }
    buffer += decoder.decode(chunk.value, { stream: true });
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (lines.length) { onEvent(parseFrame(lines)); }
        lines = [];
      } else {
        lines.push(line);
      }
    }
  }
}

async function follow() {
  for (;;) {
    try {
      await stream();
      text("stream-state", "reconnecting");
    } catch (e) {
      text("stream-state", "reconnecting: " + e.message);
    }
    await new Promise(function (r) { setTimeout(r, state.retryMs); });
  }
}

async function loadRecent() {
  const r = await getJson("/api/v1/blocks?limit=" + MAX_ROWS + "&sort=height_desc");
  if (r.status !== 200 || !r.body || !Array.isArray(r.body.blocks)) { return; }
  for (const b of r.body.blocks.slice().reverse()) { addBlock(b); }
  const top = r.body.blocks[0];
  if (top && !state.lastId) { state.lastId = top.height + ":" + top.hash; }
}

async function search(query) {
  const q = query.trim();
  if (!q) { return; }
  const e = encodeURIComponent(q);
  let paths;
  if (/^\d+$/.test(q)) { paths = ["/api/v1/blocks/height/" + e]; }
  else if (/^[0-9a-fA-F]{64}$/.test(q)) { paths = ["/api/v1/blocks/" + e.toLowerCase(), "/api/v1/transactions/" + e]; }
  else { paths = ["/api/v1/transactions/" + e]; }
  text("search-state", "searching…");
  let last = null;
  for (const p of paths) {
    last = await getJson(p);
    if (last.status === 200) {
      text("search-state", p);
      $("result").textContent = JSON.stringify(last.body, null, 2);
      return;
    }
    if (last.status !== 404) { break; }
  }
  text("search-state", problem(last));
  $("result").textContent = "";
}

function start() {
  $("key-input").value = readKey();
  $("key-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    try { sessionStorage.setItem(KEY_NAME, $("key-input").value); } catch (_) { /* private mode */ }
    if (state.controller) { state.controller.abort(); }
    refresh();
    loadRecent();
  });
  $("search-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    search($("search-input").value).catch(function (e) { text("search-state", e.message); });
  });
  refresh();
  setInterval(refresh, 5000);
  loadRecent().catch(function () { /* the stream fills the list */ }).then(follow);
}

document.addEventListener("DOMContentLoaded", start);
