// vlmwatch's page: plain JavaScript, no build step, nothing fetched but this daemon's /api/ (docs/page.md).
"use strict";

const KEY = "vlmwatch.key";
const POLL_MS = 5000; // one poll of the shown page every 5 s while the tab is visible: bounded per client
const view = document.getElementById("view");
let info = null, timer = null, blobs = [], generation = 0;

function shower() { // a page's way to show itself: not once the reader has moved on (a slow or polled render)
  const mine = generation;
  return (...nodes) => { if (mine === generation) view.replaceChildren(...nodes); return mine === generation; };
}

// ---------------------------------------------------------------- plumbing

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c.nodeType ? c : String(c));
  return el;
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

class Unauthorized extends Error {}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
  const key = localStorage.getItem(KEY);
  const response = await fetch(url, { headers: key ? { Authorization: "Bearer " + key } : {} });
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    if (key === localStorage.getItem(KEY)) askKey(body.error ? body.error.message : "This vlmwatch needs its API key.");
    throw new Unauthorized(); // (a request sent with a key since replaced says nothing)
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : response.status + " " + response.statusText);
  }
  return response.headers.get("Content-Type").startsWith("image/") ? response.blob() : response.json();
}

async function image(path, alt, cls) { // pictures need the key too: fetched, shown from a blob URL
  try {
    const url = URL.createObjectURL(await api(path));
    blobs.push(url);
    return h("img", { src: url, alt, class: cls });
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    return h("div", { class: "nopic " + (cls || "") }, "no picture");
  }
}

function askKey(message) {
  const form = document.getElementById("key-form");
  form.hidden = false;
  document.getElementById("key-error").textContent = message;
  document.getElementById("key-input").focus();
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem(KEY, document.getElementById("key-input").value.trim());
  document.getElementById("key-form").hidden = true;
  info = null;
  route();
});
document.getElementById("key-button").addEventListener("click", () => askKey("Enter the API key."));

function when(ts) {
  if (ts === null || ts === undefined) return "";
  return new Intl.DateTimeFormat(undefined, { timeZone: info.timezone, year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(new Date(ts * 1000));
}
const pct = (share) => (share === null || share === undefined) ? "" : (100 * share).toFixed(share < 0.01 ? 3 : 1) + " %";
const badge = (text, cls) => h("span", { class: "badge " + (cls || "") }, text);
const link = (href, text) => h("a", { href }, text);

function query() { return new URLSearchParams(location.hash.split("?")[1] || ""); }

// ---------------------------------------------------------------- router

const pages = { cameras, timeline, window: windowPage, event: eventPage, alerts, npu, editor }; // eventPage: events.js

async function route() {
  clearTimeout(timer);
  const mine = ++generation;
  blobs.forEach(URL.revokeObjectURL);
  blobs = [];
  const [path] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, arg] = path.split("/");
  const page = pages[name] || cameras;
  for (const a of document.querySelectorAll("nav a"))
    a.toggleAttribute("aria-current", a.getAttribute("href") === "#/" + (pages[name] ? name : "cameras"));
  if (a11yLast !== location.hash) view.focus({ preventScroll: true });
  a11yLast = location.hash;
  try {
    if (!info) {
      info = await api("/api/info");
      document.getElementById("footer").textContent = "Times in " + info.timezone;
    }
    if (mine === generation) await page(arg && decodeURIComponent(arg)); // else the reader has moved on
  } catch (e) {
    if (!(e instanceof Unauthorized)) view.replaceChildren(h("p", { role: "alert" }, "Error: " + e.message));
  }
}
let a11yLast = null;
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

function poll(again) { // refresh the shown page while it stays shown and visible
  const hash = location.hash;
  timer = setTimeout(() => { if (location.hash === hash && !document.hidden) again().catch(() => {}); else if (location.hash === hash) poll(again); }, POLL_MS);
}

// ---------------------------------------------------------------- cameras

async function cameras() {
  const show = shower();
  const data = await api("/api/cameras");
  const cards = await Promise.all(data.cameras.map(async (c) => h("article", { class: "card", "data-camera": c.name },
    h("h2", {}, c.name, badge(c.state, "state-" + c.state)),
    h("div", { class: "pic" }, c.picture ? await image(c.picture, "latest picture of " + c.name) : h("div", { class: "nopic" }, "no analysed window yet")),
    h("p", { class: "description" }, c.description || "(no description yet)"),
    h("p", { class: "dim" }, c.described_at ? "said " + when(c.described_at) : "", c.error ? h("br") : null, c.error ? "capture: " + c.error : null),
    h("p", { class: "dim" }, `last hour: ${c.last_hour.analysed} analysed, ${c.last_hour.skipped} skipped`, h("br"),
      "gate: " + (c.gate_reason || "no window yet")),
    h("p", {}, link("#/timeline?camera=" + encodeURIComponent(c.name), "Timeline"), " · ",
      c.last_window_id ? link("#/window/" + c.last_window_id, "Last window") : "", " · ",
      link("#/editor/" + encodeURIComponent(c.name), "Masks & zones")))));
  if (show(h("h1", {}, "Cameras"), h("div", { class: "grid" }, cards))) poll(cameras);
}

// ---------------------------------------------------------------- timeline and search

async function timeline() {
  const show = shower();
  const q = query();
  const field = (label, input) => h("label", {}, label, input);
  const value = (name) => q.get(name) || "";
  const form = h("form", { class: "filters", role: "search" },
    field("Search", h("input", { type: "search", name: "q", value: value("q"), placeholder: "words in descriptions, stories, alerts, summaries" })),
    field("Show", h("select", { name: "of" }, ["events", "windows"].map((v) => h("option", { value: v, selected: (v === "events") === showsEvents(q) }, v)))),
    field("Camera", h("select", { name: "camera" }, h("option", { value: "" }, "all"),
      info.cameras.map((c) => h("option", { value: c, selected: c === value("camera") }, c)))),
    field("Rule", h("input", { name: "rule", value: value("rule"), size: 10 })),
    field("Severity", h("select", { name: "severity" }, ["", "info", "warning", "critical"].map((v) =>
      h("option", { value: v, selected: v === value("severity") }, v || "any")))),
    field("From", h("input", { type: "date", name: "since", value: value("since") })),
    field("To", h("input", { type: "date", name: "until", value: value("until") })),
    field("Skipped windows", h("input", { type: "checkbox", name: "skipped", checked: value("skipped") === "1" })),
    h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, k === "skipped" ? "1" : v);
    location.hash = "#/timeline?" + p;
  });
  const list = h("ol", { class: "timeline" });
  const params = Object.fromEntries(q);
  const more = h("button", { type: "button", class: "plain", hidden: true }, "Older");
  if (!show(h("h1", {}, q.get("q") ? "Search" : "Timeline"), form, list, more)) return;
  if (q.get("q")) {
    const data = await api("/api/search", params);
    list.before(h("p", { class: "dim", id: "search-summary" }, `${data.hits.length} found in ${data.milliseconds} ms` + (data.hits.length ? ", newest first" : "")));
    list.append(...data.hits.map((hit) => h("li", {},
      h("span", { class: "badge" }, hit.kind),
      h("div", {}, h("a", { href: hit.link }, when(hit.ts) + " · " + hit.camera), h("p", {}, marked(hit.text, q.get("q")))))));
    return;
  }
  const events = showsEvents(q); // events (events.js) or windows
  async function load(before) {
    const data = await api(events ? "/api/events" : "/api/timeline", { ...params, before });
    const rows = events ? data.events : data.windows;
    for (const row of rows) list.append(await (events ? eventEntry(row) : entry(row)));
    if (!rows.length && !list.children.length) list.append(h("li", {}, "Nothing recorded yet."));
    more.hidden = !data.next_before;
    more.onclick = () => load(data.next_before);
  }
  await load();
}

async function entry(w) {
  const snap = w.alerts.find((a) => a.snapshot);
  const thumb = snap ? await image(snap.snapshot, "alert snapshot", "thumb") : (w.thumbnail ? await image(w.thumbnail, "frame", "thumb") : h("div", { class: "thumb" }));
  return h("li", { class: "card" }, h("a", { href: "#/window/" + w.id, "aria-label": "window " + w.id }, thumb),
    h("div", {},
      h("a", { href: "#/window/" + w.id }, when(w.recorded)), " · ", w.camera, " · ", w.duration.toFixed(0) + " s ",
      w.analysed ? null : badge("skipped"),
      w.alerts.map((a) => badge(a.rule + " (" + a.severity + ")", "sev-" + a.severity)),
      w.descriptions.map((d) => h("p", {}, d.text)),
      h("p", { class: "dim" }, "gate: " + w.reason)));
}

function marked(text, words) { // the searched words highlighted, as text nodes (never HTML)
  const terms = (words.match(/\w+/gu) || []).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!terms.length) return text;
  const parts = text.split(new RegExp("(\\b(?:" + terms.join("|") + ")\\w*)", "giu"));
  return h("span", {}, parts.map((p, i) => i % 2 ? h("mark", {}, p) : p));
}

// ---------------------------------------------------------------- one window

async function windowPage(id) {
  const show = shower();
  const w = await api("/api/windows/" + encodeURIComponent(id));
  let picture, note = "";
  if (w.frames.length) picture = w.frames[Math.floor(w.frames.length / 2)];
  else if (w.alerts.some((a) => a.snapshot)) { picture = w.alerts.find((a) => a.snapshot).snapshot; note = "the alert's snapshot"; }
  else { picture = "/api/cameras/" + encodeURIComponent(w.camera) + "/picture.jpg"; note = "the camera's current picture: this window's frames are no longer kept"; }
  const pic = h("div", { class: "pic" }, await image(picture, "frame of window " + w.id), regionsSvg(w.regions, []));
  const strip = h("div", { class: "frames", role: "group", "aria-label": "frames" });
  for (const [i, f] of w.frames.entries()) {
    const button = h("button", { type: "button", "aria-pressed": String(f === picture), "aria-label": "frame " + (i + 1) }, await image(f, "frame " + (i + 1)));
    button.addEventListener("click", () => {
      pic.firstChild.src = button.firstChild.src;
      strip.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
    });
    strip.append(button);
  }
  show(
    h("h1", {}, `${w.camera} · ${when(w.recorded)}`),
    h("p", {}, link("#/timeline?camera=" + encodeURIComponent(w.camera), "← timeline of " + w.camera)),
    h("div", { class: "editor" },
      h("div", {}, pic, note ? h("p", { class: "dim" }, "Picture: " + note + ". Boxes: the gate's changed regions.") : h("p", { class: "dim" }, "Boxes: the gate's changed regions."), strip),
      h("div", { class: "card" },
        h("h2", {}, "Gate"), h("p", {}, w.analysed ? badge("analysed", "state-up") : badge("skipped"), " ", w.reason),
        h("p", { class: "dim" }, `change ${pct(w.change)} · ${w.regions.length} region(s)` + (w.zones.length ? " · zones: " + w.zones.join(", ") : "") +
          (w.trigger ? " · trigger: " + w.trigger : "") + ` · ${w.duration.toFixed(1)} s`))),
    h("h2", {}, "Answers"),
    w.results.length ? h("table", {}, h("tr", {}, h("th", {}, "Prompt"), h("th", {}, "Answer"), h("th", {}, "Message id")),
      w.results.map((r) => h("tr", {}, h("td", {}, r.prompt, h("div", { class: "dim" }, r.question)),
        h("td", {}, r.choice ? r.choice + " " : "", r.text, h("div", { class: "dim" }, `${r.tokens} tokens · ${r.seconds} s · ${r.stop_reason}`)),
        h("td", { class: "dim" }, r.message_id || "—")))) : h("p", { class: "dim" }, "No answers (the window was not analysed)."),
    h("h2", {}, "Alerts"),
    w.alerts.length ? h("table", {}, w.alerts.map((a) => h("tr", {}, h("td", {}, badge(a.rule + " (" + a.severity + ")", "sev-" + a.severity)),
      h("td", {}, a.text), h("td", { class: "dim" }, a.message_id || "—")))) : h("p", { class: "dim" }, "No alert."));
}

function regionsSvg(regions, polygons) {
  const svg = s("svg", { viewBox: "0 0 1 1", preserveAspectRatio: "none", "aria-hidden": "true" });
  for (const r of regions) svg.append(s("rect", { x: r.x, y: r.y, width: r.w, height: r.h, fill: "none", stroke: "#ff3b30", "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  for (const p of polygons) svg.append(p);
  return svg;
}

// ---------------------------------------------------------------- alerts, summaries, NPU

async function alerts(anchor) {
  const show = shower();
  const [a, sm] = await Promise.all([api("/api/alerts", { limit: 30 }), api("/api/summaries", { limit: 10 })]);
  show(h("h1", {}, "Alerts"),
    a.alerts.length ? h("table", {}, a.alerts.map((x) => h("tr", { id: "alert-" + x.id }, h("td", {}, when(x.ts)), h("td", {}, x.camera),
      h("td", {}, badge(x.rule + " (" + x.severity + ")", "sev-" + x.severity)), h("td", {}, x.text),
      h("td", {}, x.window_id ? link("#/window/" + x.window_id, "window") : "")))) : h("p", {}, "No alerts yet."),
    h("h2", {}, "Summaries"),
    sm.summaries.length ? sm.summaries.map((x) => h("article", { class: "card", id: "summary-" + x.id },
      h("h2", {}, x.job), h("p", { class: "dim" }, when(x.period_start) + " – " + when(x.period_end) + " · " + x.cameras.join(", ")),
      h("p", {}, x.text))) : h("p", {}, "No summaries yet."));
  const target = anchor && document.getElementById(anchor); // a search hit's alert or summary
  if (target) { target.scrollIntoView(); target.setAttribute("tabindex", "-1"); target.focus(); }
}

async function npu() {
  const show = shower();
  const n = await api("/api/npu");
  const shown = show(h("h1", {}, "NPU"),
    h("table", {}, h("tr", {}, h("th", {}, "NPU"), h("th", {}, "Load (1 min)"), h("th", {}, "KV path")),
      n.npus.map((x) => h("tr", {}, h("td", {}, x.label), h("td", {}, pct(x.load)), h("td", {}, x.kv_path)))),
    h("p", {}, `Queue: ${n.queue} job(s) waiting. Last hour: ${n.windows} window(s) analysed, ` +
      (n.seconds_per_window === null ? "no timing yet." : `${n.seconds_per_window} s per window, ${n.decode_tokens_per_second ?? "–"} decode tok/s.`)));
  if (shown) poll(npu);
}

// ---------------------------------------------------------------- mask and zone editor

async function editor(name) {
  const show = shower();
  const data = await api("/api/cameras");
  const cam = data.cameras.find((c) => c.name === name) || data.cameras[0];
  if (!cam) { show(h("p", {}, "No cameras.")); return; }
  const shapes = [...cam.masks.map((points) => ({ kind: "mask", name: "", points })),
    ...Object.entries(cam.zones).map(([zone, points]) => ({ kind: "zone", name: zone, points }))];
  let current = [], cursor = [0.5, 0.5];
  const recent = (await api("/api/timeline", { camera: cam.name, skipped: 1, limit: 50 })).windows.flatMap((w) => w.regions);
  const svg = s("svg", { viewBox: "0 0 1 1", preserveAspectRatio: "none", tabindex: "0", role: "application",
    "aria-label": "picture: click to add a point; or arrow keys move the cross, Enter adds a point, Escape closes the polygon" });
  const kind = h("select", { "aria-label": "polygon kind" }, h("option", { value: "mask" }, "mask (gate.masks)"), h("option", { value: "zone" }, "zone"));
  const zoneName = h("input", { "aria-label": "zone name", placeholder: "zone name", pattern: "[A-Za-z0-9_\\-]+" });
  const typed = h("input", { "aria-label": "point x,y", placeholder: "x,y (0..1)" });
  const out = h("textarea", { readonly: true, wrap: "off", "aria-label": "lines for config.yaml", id: "config-lines" });
  const stats = h("p", { class: "legend", id: "region-stats" });
  const add = (x, y) => { current.push([round(x), round(y)]); draw(); };
  const close = () => {
    if (current.length < 3) return;
    const zone = kind.value === "zone" ? (zoneName.value.trim() || "zone" + (shapes.filter((p) => p.kind === "zone").length + 1)) : "";
    shapes.push({ kind: kind.value, name: zone.replace(/[^A-Za-z0-9_-]/g, "_"), points: current });
    current = [];
    draw();
  };
  svg.addEventListener("click", (e) => {
    const box = svg.getBoundingClientRect();
    add((e.clientX - box.left) / box.width, (e.clientY - box.top) / box.height);
  });
  svg.addEventListener("keydown", (e) => {
    const step = e.shiftKey ? 0.1 : 0.01, moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[e.key]) { cursor = cursor.map((v, i) => Math.min(1, Math.max(0, v + moves[e.key][i]))); draw(); }
    else if (e.key === "Enter" || e.key === " ") add(...cursor);
    else if (e.key === "Escape") close();
    else if (e.key === "Backspace") { current.pop(); draw(); }
    else return;
    e.preventDefault();
  });
  const button = (text, action, attrs) => h("button", { type: "button", class: "plain", onclick: action, ...attrs }, text);
  function draw() {
    svg.replaceChildren();
    const masks = shapes.filter((p) => p.kind === "mask"), zones = shapes.filter((p) => p.kind === "zone");
    let ignored = 0, matched = 0;
    for (const r of recent) {
      const centre = [r.x + r.w / 2, r.y + r.h / 2];
      const inMask = masks.some((p) => inside(centre, p.points)), inZone = zones.some((p) => inside(centre, p.points));
      ignored += inMask; matched += inZone && !inMask;
      svg.append(s("rect", { x: r.x, y: r.y, width: r.w, height: r.h, fill: "none", "vector-effect": "non-scaling-stroke", "stroke-width": 2,
        stroke: inMask ? "#9aa3b5" : inZone ? "#34c759" : "#ff3b30", "stroke-dasharray": inMask ? "4 3" : "" }));
    }
    for (const p of shapes) svg.append(s("polygon", { points: p.points.map((q) => q.join(",")).join(" "), "vector-effect": "non-scaling-stroke",
      fill: p.kind === "mask" ? "rgba(0,0,0,.45)" : "rgba(52,199,89,.25)", stroke: p.kind === "mask" ? "#fff" : "#34c759", "stroke-width": 2 }));
    if (current.length) svg.append(s("polyline", { points: current.map((q) => q.join(",")).join(" "), fill: "none", stroke: "#f0a500", "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
    for (const q of current) svg.append(s("circle", { cx: q[0], cy: q[1], r: 0.008, fill: "#f0a500" }));
    svg.append(s("path", { d: `M${cursor[0] - 0.02},${cursor[1]}h0.04M${cursor[0]},${cursor[1] - 0.02}v0.04`, stroke: "#f0a500", "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" }));
    stats.textContent = `${recent.length} changed region(s) in the last 50 windows: ${ignored} would be ignored by the masks (dashed grey), ` +
      `${matched} touch a zone (green), ${recent.length - ignored - matched} elsewhere (red). A region counts by its centre.`;
    out.value = configLines(masks, zones);
    list.replaceChildren(...shapes.map((p, i) => h("li", {}, `${p.kind}${p.name ? " " + p.name : ""}: ${p.points.length} points `,
      button("Remove", () => { shapes.splice(i, 1); draw(); }, { "aria-label": `remove ${p.kind} ${p.name || i + 1}` }))));
  }
  const list = h("ul", {});
  const copy = button("Copy", async () => { out.select(); try { await navigator.clipboard.writeText(out.value); } catch (e) { document.execCommand("copy"); } });
  show(h("h1", {}, "Masks & zones: " + cam.name),
    h("p", {}, "Camera: ", ...data.cameras.map((c) => [link("#/editor/" + encodeURIComponent(c.name), c.name), " "])),
    h("div", { class: "editor" },
      h("div", {}, h("div", { class: "pic" }, cam.picture ? await image(cam.picture, "current picture of " + cam.name) : h("div", { class: "nopic" }, "no picture yet"), svg), stats),
      h("div", {},
        h("div", { class: "tools" }, kind, zoneName),
        h("form", { class: "tools", onsubmit: (e) => { e.preventDefault(); const m = typed.value.split(/[ ,;]+/).map(Number);
          if (m.length === 2 && m.every((v) => v >= 0 && v <= 1)) { add(m[0], m[1]); typed.value = ""; } else typed.setCustomValidity("x,y between 0 and 1"); typed.reportValidity(); typed.setCustomValidity(""); } },
          typed, h("button", { type: "submit", class: "plain" }, "Add point")),
        h("div", { class: "tools" }, button("Close polygon", close, { id: "close-polygon" }), button("Undo point", () => { current.pop(); draw(); }),
          button("Clear all", () => { shapes.length = 0; current = []; draw(); })),
        list,
        h("p", { class: "dim" }, "Paste under the camera in config.yaml (replacing its gate.masks and zones), then run vlmwatch check-config:"),
        out, copy)));
  draw();
}

const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 1000) / 1000;

function inside([x, y], points) { // even-odd rule
  let hit = false;
  for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
    const [xi, yi] = points[i], [xj, yj] = points[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}

function configLines(masks, zones) { // the camera's keys, indented as under "cameras: - name: ..."
  const text = (p) => '"' + p.points.map((q) => q[0] + "," + q[1]).join(" ") + '"';
  const lines = ["    gate:", masks.length ? "      masks:" : "      masks: []", ...masks.map((p) => "        - " + text(p)),
    zones.length ? "    zones:" : "    zones: {}", ...zones.map((p) => "      " + p.name + ": " + text(p))];
  return lines.join("\n") + "\n";
}
