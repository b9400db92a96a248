# ruff: noqa: E501  (the page is HTML/JavaScript in a string)
"""The web view's one page: plain HTML + JavaScript, no build step, no CDN (a line box has no internet)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ovdoc</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
 header{display:flex;gap:1em;align-items:center;padding:.6em 1em;background:#222}
 header h1{font-size:1.1em;margin:0} button{font-size:.9em}
 main{display:flex;flex-wrap:wrap;gap:1em;padding:1em}
 .cam{background:#1c1c1c;border:2px solid #333;border-radius:6px;padding:.6em;width:420px}
 .cam.anomalous{border-color:#d33} .cam img{width:100%;background:#000;min-height:100px}
 .cam canvas{width:100%;height:140px;background:#000}
 .row{display:flex;gap:.5em;align-items:center;font-size:.85em;margin:.3em 0}
 .row input[type=range]{flex:1} .verdict{font-weight:bold}
 #episodes{padding:0 1em 1em 1em;font-size:.85em} #episodes li{margin:.2em 0}
</style></head><body>
<header><h1>ovdoc</h1><span id="state">connecting…</span>
<button id="pause">pause scoring</button> <button id="reload">reload bundle</button>
<span id="bundle"></span></header>
<main id="cams"></main>
<section id="episodes"><h2 style="font-size:1em">Episodes</h2><ol id="eplist" reversed></ol></section>
<script>
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const cams = {};
let scoring = true;

function post(path, body) {
  return fetch(path + q, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
}

function build(cam) {
  const el = document.createElement("div");
  el.className = "cam"; el.id = "cam" + cam.id;
  const max = Math.max(3 * cam.threshold, 1e-6);
  el.innerHTML = `<div class="row"><b>${cam.id}: ${cam.name}</b></div>
    <img id="img${cam.id}" src="/stream/${cam.id}${q}" alt="camera ${cam.id}">
    <div class="row">frame <span id="frame${cam.id}">-</span> · score <span id="score${cam.id}">-</span>
      · <span class="verdict" id="verdict${cam.id}">-</span></div>
    <canvas id="chart${cam.id}" width="400" height="140"></canvas>
    <div class="row">threshold <input type="range" id="slider${cam.id}" min="0" max="${max}"
      step="${max / 500}" value="${cam.threshold}"><span id="thr${cam.id}">${cam.threshold.toFixed(3)}</span>
      <button id="save${cam.id}">save to bundle</button></div>
    <div class="row" id="flags${cam.id}"></div>`;
  document.getElementById("cams").appendChild(el);
  const slider = el.querySelector("#slider" + cam.id);
  slider.addEventListener("input", () => { el.querySelector("#thr" + cam.id).textContent = (+slider.value).toFixed(3); });
  slider.addEventListener("change", () => post("/api/threshold", {camera: cam.id, value: +slider.value}));
  el.querySelector("#save" + cam.id).addEventListener("click",
    () => post("/api/threshold", {camera: cam.id, value: +slider.value, save: true}));
  cams[cam.id] = {el, points: cam.history.map(h => [h[0], h[2], h[3]]), threshold: cam.threshold};
  draw(cam.id);
  flags(cam);
}

const WINDOW_S = 60;  // the chart's longest time scale: the last minute, "now" at the right edge
function flags(cam) {  // flagged share (recent window) against the bundle's target and 95 % bound
  const pct = v => v == null ? "-" : (100 * v).toFixed(2) + "%";
  document.getElementById("flags" + cam.id).textContent = `flagged ${pct(cam.flag_rate)} (target ` +
    `${pct(cam.flag_rate_target)}, bound ${pct(cam.flag_rate_upper)}) · ${cam.episodes_per_hour ?? "-"} ` +
    `episodes/h` + (cam.flag_rate_high ? " · FLAG RATE HIGH" : "");
}
setInterval(async () => {
  const status = await (await fetch("/api/status" + q)).json();
  status.cameras.forEach(flags);
}, 5000);

function draw(id) {
  // axes: smoothed score (y, with the threshold marked) against seconds before now (x)
  const c = cams[id], canvas = document.getElementById("chart" + id), g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, L = 44, R = 6, T = 6, B = 18;
  g.clearRect(0, 0, w, h);
  const now = c.points.length ? Math.max(Date.now() / 1000, c.points[c.points.length - 1][0]) : Date.now() / 1000;
  const first = c.points.length ? c.points[0][0] : now;  // a short history fills the chart: 10 s, 20 s, ...
  const span = Math.min(WINDOW_S, Math.max(10, Math.ceil((now - first) / 10) * 10)), step = span / 5;
  const pts = c.points.filter(p => p[0] >= now - span);
  const top = Math.max(c.threshold * 1.5, ...pts.map(p => p[1])) || 1;
  const x = t => L + (w - L - R) * (1 - (now - t) / span);
  const y = v => h - B - (h - B - T) * v / top;
  g.font = "11px system-ui,sans-serif"; g.fillStyle = "#ccc"; g.strokeStyle = "#555"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(L, T); g.lineTo(L, h - B); g.lineTo(w - R, h - B); g.stroke();
  g.textAlign = "right"; g.textBaseline = "middle";
  for (const v of [0, top / 2, top]) { g.fillText(v.toPrecision(3), L - 4, y(v)); }
  g.textAlign = "center"; g.textBaseline = "top";
  for (let s = 0; s <= span; s += step) { const px = x(now - s); g.textAlign = s ? "center" : "right";
    g.fillText(s ? `-${s}s` : "now", s ? px : w - R, h - B + 3);
    g.beginPath(); g.moveTo(px, h - B); g.lineTo(px, h - B + 3); g.stroke(); }
  g.strokeStyle = "#f55"; g.setLineDash([4, 3]); g.beginPath(); g.moveTo(L, y(c.threshold)); g.lineTo(w - R, y(c.threshold)); g.stroke();
  g.setLineDash([]); g.fillStyle = "#f88"; g.textAlign = "left"; g.textBaseline = "bottom";
  g.fillText("threshold", L + 4, y(c.threshold) - 1);
  if (!pts.length) return;
  g.strokeStyle = "#6cf"; g.lineWidth = 1.5; g.beginPath();
  pts.forEach((p, i) => { i ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1])); });
  g.stroke();
  g.fillStyle = "#f33";  // frames judged anomalous
  pts.forEach(p => { if (p[2]) g.fillRect(x(p[0]) - 1.5, y(p[1]) - 1.5, 3, 3); });
}

function onScore(m) {
  const c = cams[m.camera]; if (!c) return;
  c.points.push([m.time, m.smoothed, m.anomalous]); if (c.points.length > 600) c.points.shift();
  c.threshold = m.threshold;
  document.getElementById("frame" + m.camera).textContent = m.frame;
  document.getElementById("score" + m.camera).textContent = m.smoothed.toFixed(3);
  document.getElementById("verdict" + m.camera).textContent = m.anomalous ? "ANOMALY" : "normal";
  c.el.classList.toggle("anomalous", m.anomalous);
  draw(m.camera);
}

function onEpisode(m) {
  const li = document.createElement("li");
  li.textContent = `${new Date(m.time * 1000).toLocaleTimeString()} camera ${m.camera}: ${m.event}` +
    (m.event === "anomaly_end" ? ` (${m.duration_s}s, peak ${(+m.peak_score).toFixed(3)})` : "");
  document.getElementById("eplist").prepend(li);
}

async function start() {
  const status = await (await fetch("/api/status" + q)).json();
  status.cameras.forEach(build);
  status.episodes.forEach(onEpisode);
  scoring = status.scoring;
  document.getElementById("pause").textContent = scoring ? "pause scoring" : "resume scoring";
  const events = new EventSource("/api/events" + q);
  events.onopen = () => { document.getElementById("state").textContent = "live"; };
  events.onerror = () => { document.getElementById("state").textContent = "disconnected"; };
  events.onmessage = e => {
    const m = JSON.parse(e.data);
    if (m.type === "score") onScore(m);
    else if (m.type === "episode") onEpisode(m);
    else if (m.type === "event" && m.event.startsWith("bundle_reload")) {
      document.getElementById("bundle").textContent = m.event === "bundle_reloaded"
        ? `bundle reloaded (${m.by})` : `reload refused: ${m.reason}`;
      if (m.event === "bundle_reloaded") { const c = cams[m.camera]; c.threshold = m.threshold;
        document.getElementById("slider" + m.camera).value = m.threshold; }
    }
    else if (m.type === "event" && m.event === "threshold_changed") {
      const c = cams[m.camera]; c.threshold = m.threshold;
      document.getElementById("slider" + m.camera).value = m.threshold;
      document.getElementById("thr" + m.camera).textContent = (+m.threshold).toFixed(3);
    }
  };
}
document.getElementById("reload").addEventListener("click", () => post("/api/reload", {}));
document.getElementById("pause").addEventListener("click", async () => {
  await post("/api/scoring", {action: scoring ? "pause" : "resume"});
  scoring = !scoring;
  document.getElementById("pause").textContent = scoring ? "pause scoring" : "resume scoring";
});
start();
</script></body></html>
"""
