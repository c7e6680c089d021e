// Veil organizer dashboard: fetches the JSON API, draws inline SVG, and
// follows /api/stream (Server-Sent Events) so it updates without reload.
// No framework, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  venue: null, zones: [], metrics: [], zone: null, metric: "occupancy",
  series: [], alerts: new Map(), latestMs: 0, es: null, day: null, reloadTimer: null, live: false,
};
const SVG = "http://www.w3.org/2000/svg";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function hhmm(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return d.toISOString().slice(11, 16) + " UTC";
}
function dayOf(ms) { return new Date(ms).toISOString().slice(0, 10); }
function fmt(v) {
  if (!isFinite(v)) return "—";
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}
// Counts (people, devices, passes) are shown as non-negative integers: the
// DP estimate can be fractional or below zero from the noise; rounding and
// clamping are post-processing and cost nothing.
const MEASURES = ["sound_level_db", "temperature_c", "co2_ppm"];
function isCount(metric) { return !MEASURES.includes(metric); }
function shown(v, metric) { return isCount(metric) ? Math.max(0, Math.round(v)) : v; }
function fmtIn(v, metric) { return isCount(metric) ? String(shown(v, metric)) : fmt(v); }
function fmtErr(e, metric) { return isCount(metric) ? String(Math.round(e)) : fmt(e); }
// A zone's level against its occupancy limit, only where the 95% interval
// says so: "over" when the whole interval is above the limit, "near" when
// it is above 80% of it, "ok" otherwise; "unknown" without a limit.
function level(o, capacity) {
  if (!capacity) return "unknown";
  const low = Math.max(0, o.value - o.error95);
  if (low >= capacity) return "over";
  if (low >= 0.8 * capacity) return "near";
  return "ok";
}

class Unauthorized extends Error {}

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, opts || {}));
  if (r.status === 401) {
    let reason = "";
    try { reason = (await r.json()).error; } catch (_) { /* empty */ }
    throw new Unauthorized(reason);
  }
  if (!r.ok) {
    let msg = r.status + "";
    try { msg = (await r.json()).error || msg; } catch (_) { /* empty */ }
    throw new Error(msg);
  }
  return r.json();
}
const q = (path, extra) => {
  const p = new URLSearchParams(Object.assign({ venue: S.venue }, extra || {}));
  return path + "?" + p.toString();
};

function showLogin(reason) {
  $("app").hidden = true; $("foot").hidden = true; $("status").hidden = true;
  $("venue-box").hidden = true; $("who").hidden = true; $("logout").hidden = true;
  $("login").hidden = false;
  $("login-reason").textContent = reason ? "Not signed in: " + reason + "." : "";
  if (S.es) { S.es.close(); S.es = null; }
}

async function start() {
  let session;
  try {
    session = await api("/api/session");
  } catch (e) {
    showLogin(e instanceof Unauthorized ? e.message : String(e.message || e));
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false; $("foot").hidden = false; $("status").hidden = false;
  $("who").hidden = false; $("logout").hidden = session.method !== "token";
  $("who").textContent = session.method === "token"
    ? "token · expires " + new Date(session.expires_ms).toISOString().slice(0, 16).replace("T", " ") + " UTC"
    : session.actor;
  const sel = $("venue");
  sel.replaceChildren(...session.venues.map((v) => { const o = el("option", null, v); o.value = v; return o; }));
  $("venue-box").hidden = session.venues.length < 2;
  sel.onchange = () => { S.venue = sel.value; S.zone = null; loadAll(); };
  S.venue = session.venues[0] || null;
  if (!S.venue) { showLogin("this credential may see no venue"); return; }
  await loadAll();
}

// The live stream opens shortly after the first load (and reloads the state
// once open, so nothing released in between is missed). Headless browsers
// that wait for the network to go idle can read the loaded page before it.
const STREAM_DELAY_MS = 1500;

async function loadAll(fromStream) {
  try {
    const [zones, alerts] = await Promise.all([api(q("/api/zones")), api(q("/api/alerts"))]);
    S.zones = zones.zones; S.metrics = zones.metrics; S.latestMs = zones.latest_ms || 0;
    S.alerts = new Map(alerts.alerts.map((a) => [a.alert_id, a]));
    if (!S.zone || !S.zones.some((z) => z.zone === S.zone)) S.zone = S.zones.length ? S.zones[0].zone : null;
    if (!S.metrics.includes(S.metric)) S.metric = S.metrics[0] || "occupancy";
    S.day = dayOf(S.latestMs || Date.now());
    renderHeat(); renderAlerts(); renderTabs(); updateAsOf();
    if (!S.live) setLive("snapshot", "snapshot · live updates starting");
    await Promise.all([loadSeries(), loadBudget()]);
    if (!fromStream) { if (S.es) { S.es.close(); S.es = null; } setTimeout(connect, STREAM_DELAY_MS); }
  } catch (e) {
    if (e instanceof Unauthorized) showLogin(e.message); else setLive("down", "error: " + e.message);
  }
}

async function loadSeries() {
  if (!S.zone) { S.series = []; renderChart(); return; }
  const page = await api(q("/api/series", { zone: S.zone, metric: S.metric }));
  S.series = page.points;
  renderChart();
}

async function loadBudget() {
  const b = await api(q("/api/budget", { day: S.day }));
  $("budget-day").textContent = b.day;
  $("budget-delta").textContent = "ε composed exactly at δ = " + b.delta.toExponential(0);
  $("budget-guarantee").textContent = "The guarantee: " + b.guarantee + ".";
  $("budget-spent").textContent = b.spent_epsilon.toFixed(2);
  $("budget-left").textContent = b.remaining_epsilon.toFixed(2);
  $("budget-total").textContent = b.budget_epsilon.toFixed(0) + " ε";
  const frac = b.budget_epsilon > 0 ? Math.min(1, b.spent_epsilon / b.budget_epsilon) : 0;
  const fill = $("budget-fill");
  fill.style.width = (frac * 100).toFixed(1) + "%";
  fill.classList.toggle("high", frac > 0.8);
  $("budget-lines").replaceChildren(...(b.lines.length ? b.lines : [null]).map((l) => {
    const tr = el("tr");
    if (!l) { const td = el("td", "dim", "nothing charged on this day"); td.colSpan = 4; tr.append(td); return tr; }
    tr.append(el("td", null, l.metric), el("td", null, l.purpose),
      el("td", "num", l.epsilon.toFixed(3)), el("td", "num", l.rho ? l.rho.toFixed(5) : "—"));
    return tr;
  }));
}

function openAlertsByZone() {
  const m = new Map();
  for (const a of S.alerts.values()) if (a.state === "raised") m.set(a.zone, (m.get(a.zone) || 0) + 1);
  return m;
}

function renderHeat() {
  const heat = $("heat");
  const open = openAlertsByZone();
  heat.replaceChildren(...S.zones.map((z) => {
    const t = el("div", "tile" + (z.zone === S.zone ? " selected" : ""));
    t.dataset.zone = z.zone;
    t.append(el("div", "name", z.zone));
    const o = z.occupancy;
    if (o && !o.suppressed) {
      const lv = level(o, z.capacity);
      t.dataset.level = lv;
      t.classList.add("level-" + lv);
      t.append(el("div", "value", fmtIn(o.value, "occupancy")),
        el("div", "err", "± " + fmtErr(o.error95, "occupancy") + " (95%)"),
        el("div", "when", (z.capacity ? "limit " + Math.round(z.capacity) + " · " : "no limit set · ") +
          "window " + hhmm(o.window_start_ms)));
    } else if (o && o.suppressed) {
      t.append(el("div", "value dim", "< min"), el("div", "err", "below the policy's display threshold"));
    } else {
      t.append(el("div", "value dim", "—"), el("div", "err", "no occupancy release"));
    }
    const n = open.get(z.zone);
    if (n) t.append(el("span", "badge", n + " alert" + (n > 1 ? "s" : "")));
    t.onclick = () => { S.zone = z.zone; renderHeat(); loadSeries(); };
    return t;
  }));
  if (!S.zones.length) heat.replaceChildren(el("p", "dim empty", "No releases from this venue yet."));
}

function renderTabs() {
  $("metric-tabs").replaceChildren(...S.metrics.map((m) => {
    const b = el("button", "tab" + (m === S.metric ? " on" : ""), m);
    b.type = "button";
    b.onclick = () => { S.metric = m; renderTabs(); loadSeries(); };
    return b;
  }));
  $("series-zone").textContent = S.zone || "—";
}

function renderChart() {
  $("series-zone").textContent = S.zone || "—";
  const box = $("chart");
  const W = 900, H = 260, L = 52, R = 12, T = 12, B = 28;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
    "aria-label": `${S.metric} in ${S.zone}` });
  const pts = S.series.filter((p) => !p.suppressed).map((p) => {
    if (!isCount(S.metric)) return p;
    const v = shown(p.value, S.metric);
    return Object.assign({}, p, { value: v, low: Math.max(0, p.value - p.error95), high: Math.max(0, p.value + p.error95) });
  });
  const lo = (p) => (p.low !== undefined ? p.low : p.value - p.error95);
  const hi = (p) => (p.high !== undefined ? p.high : p.value + p.error95);
  if (!pts.length) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
    t.textContent = "no releases of " + S.metric + " in this zone";
    s.append(t); box.replaceChildren(s); return;
  }
  const x0 = pts[0].window_start_ms, x1 = Math.max(x0 + 60000, pts[pts.length - 1].window_start_ms);
  let y0 = Math.min(...pts.map(lo)), y1 = Math.max(...pts.map(hi));
  if (S.metric !== "sound_level_db" && S.metric !== "temperature_c" && S.metric !== "co2_ppm") y0 = Math.min(0, y0);
  if (y1 - y0 < 1) y1 = y0 + 1;
  const pad = (y1 - y0) * 0.06; y1 += pad; if (y0 < 0 || S.metric === "sound_level_db") y0 -= pad;
  const X = (ms) => L + (W - L - R) * (ms - x0) / (x1 - x0);
  const Y = (v) => T + (H - T - B) * (1 - (v - y0) / (y1 - y0));
  // Alert windows of this zone and metric.
  for (const a of S.alerts.values()) {
    if (a.zone !== S.zone) continue;
    const a0 = Math.max(x0, a.window_start_ms), a1 = Math.min(x1, (a.last_window_ms || a.window_start_ms) + a.window_len_s * 1000);
    if (a1 < x0 || a0 > x1) continue;
    s.append(svg("rect", { x: X(a0), y: T, width: Math.max(2, X(a1) - X(a0)), height: H - T - B, class: "alertspan" }));
  }
  // Grid and axes.
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4, y = Y(v);
    s.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" }));
    const t = svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }); t.textContent = isCount(S.metric) ? String(Math.round(v)) : fmt(v); s.append(t);
  }
  const span = x1 - x0, step = [60e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3].find((st) => span / st <= 8) || 14400e3;
  for (let ms = Math.ceil(x0 / step) * step; ms <= x1; ms += step) {
    const x = X(ms);
    s.append(svg("line", { x1: x, x2: x, y1: H - B, y2: H - B + 4, class: "axis" }));
    const t = svg("text", { x, y: H - 8, "text-anchor": "middle" }); t.textContent = hhmm(ms).slice(0, 5); s.append(t);
  }
  s.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  // Error band and line.
  const up = pts.map((p) => `${X(p.window_start_ms).toFixed(1)},${Y(hi(p)).toFixed(1)}`);
  const down = pts.slice().reverse().map((p) => `${X(p.window_start_ms).toFixed(1)},${Y(lo(p)).toFixed(1)}`);
  s.append(svg("polygon", { points: up.concat(down).join(" "), class: "band" }));
  s.append(svg("polyline", { points: pts.map((p) => `${X(p.window_start_ms).toFixed(1)},${Y(p.value).toFixed(1)}`).join(" "), class: "line" }));
  const last = pts[pts.length - 1];
  const c = svg("circle", { cx: X(last.window_start_ms), cy: Y(last.value), r: 3.5, fill: "#4cc2ff" });
  const title = svg("title"); title.textContent = `${hhmm(last.window_start_ms)}: ${fmtIn(last.value, S.metric)} ± ${fmtErr(last.error95, S.metric)} (95%)`;
  c.append(title); s.append(c);
  box.replaceChildren(s);
}

function renderAlerts() {
  const list = [...S.alerts.values()].sort((a, b) => (b.state === "raised") - (a.state === "raised") || b.raised_ms - a.raised_ms);
  const open = list.filter((a) => a.state === "raised").length;
  $("alert-counts").textContent = `${open} open · ${list.length - open} resolved`;
  $("alerts-empty").hidden = list.length > 0;
  $("alert-list").replaceChildren(...list.slice(0, 200).map(renderAlert));
}

function renderAlert(a) {
  const li = el("li", `alert ${a.severity} ${a.state}` + (a.fresh ? " fresh" : ""));
  li.dataset.id = a.alert_id;
  const top = el("div", "top");
  top.append(el("span", "title", `${a.zone} · ${a.source === "anomaly" ? "anomaly in " + a.metric : a.source}`),
    el("span", `pill ${a.state === "resolved" ? "resolved" : a.severity}`, a.state === "resolved" ? "resolved" : a.severity));
  li.append(top);
  li.append(el("div", "meta", `from window ${hhmm(a.window_start_ms)}` +
    (a.state === "resolved" ? ` to ${hhmm(a.last_window_ms + a.window_len_s * 1000)}` : " · ongoing") + ` · ${a.metric}`));
  if (a.runbook) li.append(el("div", "runbook", a.runbook));
  if (a.detail) li.append(el("div", "detail", a.detail));
  const act = el("div", "actions");
  if (a.acked_by) {
    act.append(el("span", "dim", `acknowledged by ${a.acked_by.replace("spiffe://veil/role/", "")} at ${hhmm(a.acked_ms)}`));
  } else if (a.state !== "raised") {
    act.append(el("span", "dim", "resolved without acknowledgement"));
  } else {
    const b = el("button", null, "Acknowledge");
    b.type = "button";
    b.onclick = async () => {
      b.disabled = true;
      try {
        const r = await api(q(`/api/alerts/${encodeURIComponent(a.alert_id)}/ack`), { method: "POST", headers: { "X-Veil-Request": "1" } });
        S.alerts.set(r.alert_id, r); renderAlerts();
      } catch (e) {
        if (e instanceof Unauthorized) showLogin(e.message); else { b.disabled = false; b.textContent = "Retry (" + e.message + ")"; }
      }
    };
    act.append(b);
  }
  li.append(act);
  return li;
}

function updateAsOf() { $("asof").textContent = S.latestMs ? dayOf(S.latestMs) + " " + hhmm(S.latestMs) : "—"; }

function setLive(state, text) {
  S.live = state === "live";
  const d = $("live-dot");
  d.classList.toggle("live", state === "live");
  d.classList.toggle("down", state === "down");
  d.classList.toggle("snapshot", state === "snapshot");
  $("live-text").textContent = text;
}

function scheduleReload() {
  if (S.reloadTimer) return;
  S.reloadTimer = setTimeout(() => { S.reloadTimer = null; loadAll(true); }, 500);
}

function connect() {
  if (S.es) S.es.close();
  const es = new EventSource(q("/api/stream"));
  S.es = es;
  es.addEventListener("open", () => { setLive("live", "live"); scheduleReload(); });
  es.addEventListener("error", () => {
    setLive("down", "live updates paused · reconnecting (the figures shown are a snapshot)");
    // A 401 on reconnect shows as an error too: check the session.
    api("/api/session").catch((e) => { if (e instanceof Unauthorized) showLogin(e.message); });
  });
  es.addEventListener("point", (ev) => {
    const p = JSON.parse(ev.data);
    if (p.window_start_ms > S.latestMs) { S.latestMs = p.window_start_ms; updateAsOf(); }
    if (p.metric === "occupancy") {
      const z = S.zones.find((z) => z.zone === p.zone);
      if (z) {
        if (!z.occupancy || p.window_start_ms >= z.occupancy.window_start_ms) z.occupancy = p;
      } else {
        S.zones.push({ zone: p.zone, occupancy: p }); S.zones.sort((a, b) => a.zone.localeCompare(b.zone));
      }
      renderHeat();
      const t = document.querySelector(`.tile[data-zone="${CSS.escape(p.zone)}"]`);
      if (t) t.classList.add("flash");
    }
    if (p.zone === S.zone && p.metric === S.metric) {
      const i = S.series.findIndex((x) => x.window_start_ms === p.window_start_ms);
      if (i >= 0) S.series[i] = p; else { S.series.push(p); S.series.sort((a, b) => a.window_start_ms - b.window_start_ms); }
      renderChart();
    }
  });
  es.addEventListener("alert", (ev) => {
    const a = JSON.parse(ev.data);
    a.fresh = true;
    S.alerts.set(a.alert_id, a);
    renderAlerts(); renderHeat();
    if (a.zone === S.zone) renderChart();
  });
  es.addEventListener("lagged", (ev) => {
    const n = JSON.parse(ev.data).skipped;
    $("lag-note").textContent = `The live stream skipped ${n} update(s) while this page lagged; reloaded from the API.`;
    scheduleReload();
  });
}

document.addEventListener("DOMContentLoaded", start);
