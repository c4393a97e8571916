// tasklog serve: the pages' one script. What the log holds is only ever set as text
// (textContent), never parsed as markup: a label or an error can hold anything a Hub was given.
"use strict";

const TL = {};

// -- Extended JSON, as the API writes it (relaxed mode) ------------------------------------
TL.parse = (text) => JSON.parse(text, (key, v) => {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === "$date") {
      const d = v.$date;
      return new Date(typeof d === "object" ? Number(d.$numberLong) : d);
    }
    if (keys.length === 1 && keys[0] === "$numberLong") return Number(v.$numberLong);
  }
  return v;
});

TL.api = async (path, params) => {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  const res = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  const text = await res.text();
  let body;
  try { body = TL.parse(text); } catch (err) { throw new Error(text.split("\n")[0] || res.statusText); }  // a 403 is text
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
};

// -- DOM, as text ----------------------------------------------------------------------------
TL.el = (tag, props, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
};
TL.show = (v) => {
  if (v === null || v === undefined) return "";
  if (v instanceof Date) return v.toISOString().replace("T", " ").replace("Z", "");
  if (typeof v === "object") return JSON.stringify(v, (k, x) => (x instanceof Date ? x.toISOString() : x));
  return String(v);
};
TL.taskLink = (id) => TL.el("a", {href: "/task/" + encodeURIComponent(id), text: id});
TL.fill = (tbody, rows) => { tbody.replaceChildren(...rows); };
TL.row = (...cells) => TL.el("tr", {}, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : TL.el("td", {}, c instanceof Node ? c : TL.show(c)))));
TL.num = (n) => TL.el("td", {cls: "num", text: n === null || n === undefined ? "" : Number(n).toLocaleString("en")});
TL.error = (err) => {
  const p = document.getElementById("error");
  if (!p) { if (err) console.warn(String(err.message || err)); return; }
  p.hidden = !err; p.textContent = err ? String(err.message || err) : "";
};

// -- live: a commit notice from the server makes the page fetch what it shows again ---------------
TL.live = (refresh) => {
  const badge = document.getElementById("live");
  const source = new EventSource("/api/live");
  let busy = false, again = false;
  const run = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try { await refresh(); TL.error(null); } catch (err) { TL.error(err); }
    busy = false;
    if (again) { again = false; run(); }
  };
  source.addEventListener("commit", (e) => { badge.textContent = "live: event " + Number(e.data).toLocaleString("en"); badge.className = "live on"; document.body.dataset.seq = e.data; run(); });
  source.onerror = () => { badge.textContent = "reconnecting"; badge.className = "live off"; };
  return run;
};

// -- charts on canvas ----------------------------------------------------------------------------
TL.canvas = (id) => { const c = document.getElementById(id); const g = c.getContext("2d"); g.clearRect(0, 0, c.width, c.height); g.font = "11px system-ui"; return [c, g]; };
TL.bars = (id, labels, values, colors) => {
  const [c, g] = TL.canvas(id);
  const max = Math.max(1, ...values), w = (c.width - 40) / Math.max(values.length, 1);
  values.forEach((v, i) => {
    const h = (c.height - 40) * v / max;
    g.fillStyle = colors ? colors[i % colors.length] : "#5aa0ff";
    g.fillRect(30 + i * w + 2, c.height - 25 - h, Math.max(w - 4, 1), h);
    g.fillStyle = "#1d232b";
    if (labels[i] !== "") g.fillText(labels[i], 30 + i * w + 2, c.height - 10);
    if (values.length <= 12) g.fillText(Number(v).toLocaleString("en"), 30 + i * w + 2, c.height - 28 - h);
  });
};
TL.lines = (id, series, colors) => {
  const [c, g] = TL.canvas(id);
  const n = Math.max(...series.map((s) => s.length), 1), max = Math.max(1, ...series.flat());
  series.forEach((s, k) => {
    g.strokeStyle = colors[k]; g.beginPath();
    s.forEach((v, i) => { const x = 30 + (c.width - 40) * i / Math.max(n - 1, 1), y = c.height - 20 - (c.height - 40) * v / max; if (i) g.lineTo(x, y); else g.moveTo(x, y); });
    g.stroke();
  });
  g.fillStyle = "#1d232b"; g.fillText(String(max.toLocaleString("en")), 2, 14);
};

// -- pages -------------------------------------------------------------------------------------
TL.pages = {};

TL.pages.overview = () => TL.live(async () => {
  const o = await TL.api("/api/overview");
  const s = o.states, src = o.source;
  document.getElementById("where").textContent = src.log ? src.log : src.projection;
  const card = (label, value) => TL.el("div", {cls: "card"}, TL.el("b", {text: Number(value).toLocaleString("en")}), label);
  TL.fill(document.getElementById("cards"), [card("tasks", o.tasks), card("running", s.running), card("pending", s.pending),
    card("completed", s.completed), card("failed", s.failed), card("resubmitted", s.resubmitted),
    card("engines busy", o.engines.busy), card("engines", o.engines.engines),
    card("events folded", src.folded_seq)]);
  const names = Object.keys(s);
  TL.bars("states", names, names.map((k) => s[k]), ["#9aa4b1", "#f2b705", "#138a36", "#b42318", "#7a5af8", "#5b6470"]);
  const per = (xs) => xs.map((x) => (o.throughput.step_s ? x * 60 / o.throughput.step_s : x));
  TL.lines("throughput", [per(o.throughput.submitted), per(o.throughput.completed), per(o.throughput.failed)], ["#5aa0ff", "#138a36", "#b42318"]);
  for (const which of ["wait", "run"]) {
    const d = o[which];
    TL.bars(which, d.edges.slice(0, -1).map((e, i) => (i % 4 === 0 ? (e < 1 ? e.toPrecision(1) : String(Math.round(e))) : "")), d.counts);
    document.getElementById(which + "-q").textContent = d.n ? `p50 ${d.p50.toPrecision(3)} s, p90 ${d.p90.toPrecision(3)} s, p99 ${d.p99.toPrecision(3)} s, max ${d.max.toPrecision(3)} s (${d.n.toLocaleString("en")} tasks)` : "no task yet";
  }
  TL.fill(document.querySelector("#engines tbody"), o.engines.top.map(([e, n]) => TL.row(e, TL.num(n))));
  TL.fill(document.querySelector("#failures tbody"), o.failures.map((f) => TL.row(TL.taskLink(f.msg_id), f.engine_uuid, f.completed, [f.ename, f.evalue].filter((x) => x).join(": ") || f.status)));
});

TL.SORTS = ["submitted", "started", "completed", "msg_id", "engine_uuid", "client_uuid", "label", "queue"];
TL.pages.tasks = () => {
  const form = document.getElementById("query-form"), q = document.getElementById("query");
  const sort = document.getElementById("sort"), limit = document.getElementById("limit"), keys = document.getElementById("keys");
  for (const f of TL.SORTS) for (const d of ["-", ""]) sort.append(TL.el("option", {value: d + f, text: f + (d ? " (newest first)" : " (ascending)")}));
  const params = new URLSearchParams(location.search);
  if (params.get("q")) q.value = params.get("q");
  if (params.get("sort")) sort.value = params.get("sort");
  const state = {after: null, next: null};
  const exportLinks = () => {
    for (const fmt of ["parquet", "jsonl", "csv"]) {
      const u = new URL("/api/export", location.origin);
      u.searchParams.set("q", q.value); u.searchParams.set("format", fmt);
      if (keys.value) u.searchParams.set("keys", keys.value);
      document.getElementById("export-" + fmt).href = u.pathname + u.search;
    }
  };
  const show = async () => {
    const p = await TL.api("/api/tasks", {q: q.value, sort: sort.value, limit: limit.value, keys: keys.value, after: state.after});
    const cols = p.records.length ? [...new Set(p.records.flatMap((r) => Object.keys(r)))] : [];
    document.querySelector("#tasks thead").replaceChildren(TL.el("tr", {}, ...cols.map((c) => TL.el("th", {text: c}))));
    TL.fill(document.querySelector("#tasks tbody"), p.records.map((r) => TL.row(...cols.map((c) => (c === "msg_id" ? TL.taskLink(r[c]) : r[c])))));
    state.next = p.after;
    document.getElementById("next").disabled = !p.after;
    document.body.dataset.rows = String(p.records.length);
  };
  const count = async () => {
    const el = document.getElementById("count");
    try { const c = await TL.api("/api/tasks", {q: q.value, limit: 1, keys: "msg_id", count: 1}); el.textContent = c.count.toLocaleString("en") + " matches"; } catch (err) { el.textContent = ""; }
  };
  const refresh = TL.live(show);
  const run = () => { history.replaceState(null, "", "?" + new URLSearchParams({q: q.value, sort: sort.value})); exportLinks(); refresh(); count(); };
  form.addEventListener("submit", (e) => { e.preventDefault(); state.after = null; run(); });
  document.getElementById("first").addEventListener("click", () => { state.after = null; refresh(); });
  document.getElementById("next").addEventListener("click", () => { state.after = state.next; refresh(); });
  sort.addEventListener("change", () => { state.after = null; run(); });
  exportLinks(); count();
};

TL.pages.task = () => {
  const raw = location.pathname.slice("/task/".length);
  let id = raw;
  try { id = decodeURIComponent(raw); } catch (err) { id = raw; }  // "/task/a%zz": not an escape, the id as written
  document.getElementById("title").textContent = "Task " + id;
  TL.live(async () => {
    const t = await TL.api("/api/task/" + encodeURIComponent(id));
    const r = t.record || {};
    const fields = ["submitted", "started", "completed", "engine_uuid", "client_uuid", "queue", "label", "resubmitted", "resubmitted_from"];
    const status = r.result_content && r.result_content.status;
    TL.fill(document.querySelector("#summary tbody"), [TL.row("state", t.missing || t.state + (status ? ` (reply: ${status})` : "")), ...fields.map((f) => TL.row(f, f.startsWith("resubmitted") && r[f] ? TL.taskLink(r[f]) : r[f]))]);
    document.getElementById("chain").replaceChildren(...t.chain.map((m) => TL.el("li", {}, m === id ? TL.el("b", {text: m}) : TL.taskLink(m))));
    const sizes = (b) => (Array.isArray(b) ? b.map((x) => (x && x.$size !== undefined ? x.$size : "?")) : []);
    TL.fill(document.querySelector("#buffers tbody"), [["buffers", r.buffers], ["result_buffers", r.result_buffers]].map(([k, b]) => TL.row(k, sizes(b).length + " buffers: " + sizes(b).join(", ") + " bytes")));
    document.getElementById("stdout").textContent = r.stdout || "";
    document.getElementById("stderr").textContent = r.stderr || "";
    document.getElementById("record").textContent = JSON.stringify(t.record, (k, x) => x, 2);
    const events = t.story ? t.story.events : [];
    TL.fill(document.querySelector("#story tbody"), events.map((e) => {
      const {seq, type, committed, msg_id, ...rest} = e;
      return TL.row(TL.num(seq), committed, type, msg_id === id ? msg_id : TL.taskLink(msg_id), TL.show(rest).slice(0, 400));
    }));
  });
};

TL.pages.timeline = () => {
  const canvas = document.getElementById("lanes");
  const view = {start: null, stop: null, data: null, stack: []};
  const draw = () => {
    const d = view.data, g = canvas.getContext("2d");
    const lanes = d.engines.length, top = 20, left = 120, h = Math.max(12, Math.min(30, 360 / Math.max(lanes, 1)));
    canvas.height = top + lanes * h + 30;
    g.clearRect(0, 0, canvas.width, canvas.height); g.font = "11px system-ui";
    const x = (us) => left + (canvas.width - left - 10) * (us - d.start) / Math.max(d.stop - d.start, 1);
    d.engines.forEach((e, i) => { g.fillStyle = "#1d232b"; g.fillText(e.slice(0, 18), 4, top + i * h + h * 0.7); });
    if (d.mode === "slices") {
      for (const [lane, s, e, failed] of d.slices) { g.fillStyle = failed ? "#b42318" : "#138a36"; g.fillRect(x(s), top + lane * h + 2, Math.max(x(e) - x(s), 1), h - 4); }
    } else if (d.mode === "columns") {
      d.columns.forEach((col, lane) => { const w = (canvas.width - left - 10) / col.length; col.forEach((b, i) => { if (b > 0) { g.fillStyle = `rgba(19,138,54,${Math.min(b, 1)})`; g.fillRect(left + i * w, top + lane * h + 2, Math.ceil(w), h - 4); } }); });
    }
    g.fillStyle = "#5b6470";
    if (d.start) { g.fillText(new Date(d.start / 1000).toISOString(), left, canvas.height - 8); const r = new Date(d.stop / 1000).toISOString(); g.fillText(r, canvas.width - 10 - g.measureText(r).width, canvas.height - 8); }
    document.getElementById("mode").textContent = d.mode === "columns" ? "Too many tasks to draw one by one: each column shows how many tasks ran on average." : (d.mode === "empty" ? "No task has run yet." : `${d.slices.length.toLocaleString("en")} task runs.`) + (d.more_engines ? ` ${d.more_engines} more engines not drawn.` : "");
    document.getElementById("range").textContent = d.start ? `${((d.stop - d.start) / 1e6).toFixed(3)} s shown` : "";
    view.geometry = {left, top, h, x};
  };
  const refresh = TL.live(async () => {
    view.data = await TL.api("/api/timeline", {start: view.start, stop: view.stop, width: canvas.width - 130});
    draw();
  });
  const at = (px) => { const d = view.data, left = view.geometry.left; return d.start + (d.stop - d.start) * (px - left) / (canvas.width - left - 10); };
  let from = null;
  canvas.addEventListener("mousedown", (e) => { from = e.offsetX; });
  canvas.addEventListener("mouseup", (e) => {
    if (from === null || !view.data || !view.data.start) return;
    const a = Math.min(from, e.offsetX), b = Math.max(from, e.offsetX); from = null;
    if (b - a > 4) { view.stack.push([view.start, view.stop]); view.start = Math.round(at(a)); view.stop = Math.round(at(b)); refresh(); return; }
    if (view.data.mode !== "slices") return;
    const lane = Math.floor((e.offsetY - view.geometry.top) / view.geometry.h), t = at(e.offsetX);
    const hit = view.data.slices.find(([l, s, en]) => l === lane && s <= t && t <= en);
    if (hit) location.href = "/task/" + encodeURIComponent(hit[4]);
  });
  document.getElementById("zoom-out").addEventListener("click", () => { [view.start, view.stop] = view.stack.pop() || [null, null]; refresh(); });
  document.getElementById("reset").addEventListener("click", () => { view.stack = []; view.start = view.stop = null; refresh(); });
};

TL.pages.hubs = () => TL.live(async () => {
  const h = await TL.api("/api/hubs");
  document.getElementById("fed").textContent = h.fed ? `${h.hubs.length} hubs feed this projection.` : "This view reads one log, not a stream of hubs: no hub to show.";
  TL.fill(document.querySelector("#hubs tbody"), h.hubs.map((r) => TL.row(r.hub, r.log, TL.num(r.checkpoint), TL.num(r.still_s))));
});

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  for (const a of document.querySelectorAll("header nav a")) if (a.dataset.nav === page) a.className = "here";
  TL.pages[page]();
});
