// lab dashboard: the fleet, a rollout, a machine. No framework, no build:
// the data are internal/render's views from /api, kept live by /api/live.
"use strict";

const state = { fleet: null, who: null, filter: { group: "", state: "", text: "" }, live: false };
const $ = (sel) => document.querySelector(sel);

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function short(p) {
  if (!p) return "—";
  const m = /^\/nix\/store\/[0-9a-z]{32}-(.*)$/.exec(p);
  return m ? m[1] : p;
}
function ago(t, now) {
  if (!t || t.startsWith("0001")) return "—";
  let s = Math.max(0, Math.round(((now ? new Date(now) : new Date()) - new Date(t)) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  if (s < 86400) return Math.round(s / 3600) + "h ago";
  return Math.round(s / 86400) + "d ago";
}
function stateTag(s) { return `<span class="state ${esc(s)}">${esc(s)}</span>`; }
function checks(c) {
  const names = Object.keys(c || {}).sort();
  if (!names.length) return "—";
  return names.map((n) => {
    const r = c[n];
    const cls = !r.at ? "muted" : r.ok ? "" : "bad";
    return `<span class="${cls}" title="${esc(r.detail)}">${esc(n)}:${!r.at ? "?" : r.ok ? "ok" : "FAIL"}</span>`;
  }).join(" ");
}
function bar(w) {
  const t = Math.max(1, w.total);
  const pct = (n) => (100 * n / t).toFixed(2) + "%";
  return `<div class="bar" title="${w.succeeded} succeeded, ${w.failed} failed, ${w.running} running, ${w.pending} pending">` +
    `<span class="s" data-w="${pct(w.succeeded)}"></span><span class="f" data-w="${pct(w.failed)}"></span>` +
    `<span class="r" data-w="${pct(w.running)}"></span></div>`;
}
// sized bars: widths are set from script, as the page's policy forbids inline styles
function sizeBars() { document.querySelectorAll(".bar span[data-w]").forEach((e) => { e.style.width = e.dataset.w; }); }
function rolloutBar(r) {
  const c = r.counters;
  return bar({ total: c.total, succeeded: c.succeeded, failed: c.failed + c.rolled_back, running: c.running, pending: c.pending });
}
async function api(path, opts) {
  const res = await fetch(path, opts);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}
function toast(msg) {
  let t = $("#toast");
  if (!t) { t = document.createElement("div"); t.id = "toast"; document.body.appendChild(t); }
  t.textContent = msg;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.remove(), 5000);
}

// ---- the fleet ----
function visible(m) {
  const f = state.filter;
  if (f.group && !(m.groups || []).includes(f.group)) return false;
  if (f.state === "attention" && !m.attention) return false;
  if (f.state === "offline" && m.online) return false;
  if (f.state && !["attention", "offline"].includes(f.state) && m.state !== f.state) return false;
  if (f.text && !m.node.includes(f.text)) return false;
  return true;
}
function renderFleet() {
  const d = state.fleet;
  $("#crumbs").innerHTML = "fleet";
  if (!d) return;
  const c = d.counts;
  const chips = [["", `${c.machines} machines`], ["attention", `${c.attention} need attention`], ["offline", `${c.offline} offline`]]
    .concat(Object.keys(c.by_state).sort().map((s) => [s, `${c.by_state[s]} ${s}`]));
  const rollouts = d.rollouts.filter((r) => r.active || r.state === "pending").concat(d.rollouts.filter((r) => !(r.active || r.state === "pending")).slice(0, 5));
  const ms = d.machines.filter(visible);
  $("#main").innerHTML = `
    <h1>Fleet</h1>
    <div class="counts">${chips.map(([k, label]) => `<button class="chip ${state.filter.state === k ? "on" : ""}" data-state="${esc(k)}">${esc(label)}</button>`).join("")}</div>
    ${rollouts.length ? `<h2>Rollouts</h2><div class="card rollouts">${rollouts.map((r) => `
      <div class="rollout" data-rollout="${esc(r.id)}"><a href="#/rollout/${encodeURIComponent(r.id)}">${esc(r.id)}</a>${rolloutBar(r)}<span>${stateTag(r.state)} ${esc(r.summary)}</span></div>`).join("")}</div>` : ""}
    <h2>Machines</h2>
    <div class="filters">
      <label>group <select id="f-group"><option value="">all</option>${c.groups.map((g) => `<option ${g === state.filter.group ? "selected" : ""}>${esc(g)}</option>`).join("")}</select></label>
      <label>name <input id="f-text" value="${esc(state.filter.text)}" placeholder="filter"></label>
      <span class="muted" id="shown">${ms.length} of ${c.machines} shown</span>
    </div>
    <table id="machines"><thead><tr><th>machine</th><th>online</th><th>state</th><th>runs</th><th>should run</th><th>checks</th><th>reboot</th><th>groups</th><th>last seen</th><th>attention</th></tr></thead>
    <tbody>${ms.map((m) => machineRow(m, d.now)).join("")}</tbody></table>`;
  sizeBars();
  document.querySelectorAll(".chip").forEach((b) => b.onclick = () => { state.filter.state = b.dataset.state; renderFleet(); });
  $("#f-group").onchange = (e) => { state.filter.group = e.target.value; renderFleet(); };
  $("#f-text").oninput = (e) => { state.filter.text = e.target.value; renderFleet(); $("#f-text").focus(); const v = $("#f-text").value; $("#f-text").setSelectionRange(v.length, v.length); };
}
function machineRow(m, now) {
  const wrong = m.desired && m.current && m.desired !== m.current;
  return `<tr data-node="${esc(m.node)}" data-state="${esc(m.state)}" class="${m.attention ? "attention rank-" + m.rank : ""}">
    <td><a href="#/machine/${encodeURIComponent(m.node)}">${esc(m.node)}</a></td>
    <td><span class="dot ${m.online ? "on" : ""}"></span>${m.online ? "online" : "offline"} <span class="muted">${ago(m.since, now)}</span></td>
    <td>${stateTag(m.state)}${m.rollout ? ` <a class="muted" href="#/rollout/${encodeURIComponent(m.rollout)}">${esc(m.rollout)}</a>` : ""}</td>
    <td><code title="${esc(m.current)}">${esc(short(m.current))}</code></td>
    <td><code class="${wrong ? "warn" : "muted"}" title="${esc(m.desired)}">${m.desired ? esc(short(m.desired)) : "—"}</code></td>
    <td>${checks(m.checks)}</td>
    <td>${m.needs_reboot ? `<span class="warn">needs reboot</span>` : ""}</td>
    <td>${esc((m.groups || []).join(", "))}</td>
    <td class="muted">${ago(m.last_seen, now)}</td>
    <td class="${m.attention ? "bad" : ""}">${esc(m.attention || "")}</td></tr>`;
}

// ---- a rollout ----
async function renderRollout(id) {
  $("#crumbs").innerHTML = `<a href="#/">fleet</a> / rollout ${esc(id)}`;
  let d;
  try { d = await api("/api/rollouts/" + encodeURIComponent(id)); } catch (e) { $("#main").innerHTML = `<p class="bad">${esc(e.message)}</p>`; return; }
  const r = d.rollout;
  $("#main").innerHTML = `
    <h1>Rollout ${esc(r.id)} ${stateTag(d.paused ? "paused" : r.state)}</h1>
    <div class="card"><div class="kv">
      <div>summary</div><div id="summary">${esc(r.summary)}</div>
      <div>action, strategy</div><div>${esc(r.action)}, ${esc(r.strategy || "all")}</div>
      <div>created</div><div>${esc(r.created)} ${r.submitter ? "by " + esc(r.submitter) : ""}</div>
      ${d.paused ? `<div>paused</div><div class="warn">by ${esc(d.paused)}: no further wave opens until it is resumed</div>` : ""}
      ${r.reason ? `<div>${r.halted ? "halted" : "reason"}</div><div class="bad" id="reason">${esc(r.reason)}</div>` : ""}
      ${r.omitted ? `<div>targets not listed</div><div>${r.omitted} (the retained state leaves succeeded ones out of very large rollouts)</div>` : ""}
    </div>
    <div class="actions" style="margin-top:10px">${d.actions.map((a) => `<button data-act="${a}" class="${a === "cancel" ? "danger" : ""}">${a}</button>`).join("")}</div></div>
    <h2>Waves</h2><div class="card">${r.waves.map((w) => `<div class="wave"><span>wave ${w.index} ${w.open ? "" : '<span class="muted">(closed)</span>'}</span>${bar(w)}<span class="muted">${w.succeeded}/${w.total} succeeded${w.failed ? `, <span class="bad">${w.failed} failed</span>` : ""}${w.running ? `, ${w.running} running` : ""}${w.pending ? `, ${w.pending} pending` : ""}</span></div>`).join("")}</div>
    <h2>Targets</h2><table id="targets"><thead><tr><th>machine</th><th>wave</th><th>state</th><th>online</th><th>error</th></tr></thead><tbody>
    ${r.targets.map((t) => `<tr data-node="${esc(t.node)}" data-state="${esc(t.state)}"><td><a href="#/machine/${encodeURIComponent(t.node)}">${esc(t.node)}</a></td><td>${t.wave}</td><td>${stateTag(t.state)}</td><td><span class="dot ${t.online ? "on" : ""}"></span></td><td class="bad">${esc(t.error || "")}</td></tr>`).join("")}</tbody></table>
    <h2>Timeline</h2>${lines(d.lines, true)}`;
  sizeBars();
  document.querySelectorAll("[data-act]").forEach((b) => b.onclick = async () => {
    if (b.dataset.act === "cancel" && !confirm(`Cancel rollout ${r.id}? Machines that have not started keep their system.`)) return;
    try { await api(`/api/rollouts/${encodeURIComponent(r.id)}/${b.dataset.act}`, { method: "POST", headers: { "X-Lab-Action": "1" } }); toast(`${b.dataset.act}: done`); }
    catch (e) { toast(`${b.dataset.act}: ${e.message}`); }
    route();
  });
}
function lines(ls, withNode) {
  if (!ls.length) return `<p class="muted">Nothing seen yet (the controller keeps the events it saw since it started).</p>`;
  return `<table class="timeline"><tbody>${ls.slice().reverse().map((l) => `<tr class="${l.trouble ? "trouble" : ""}"><td class="muted">${esc(new Date(l.at).toLocaleString())}</td>
    ${withNode ? `<td>${l.node ? `<a href="#/machine/${encodeURIComponent(l.node)}">${esc(l.node)}</a>` : "rollout"}</td>` : `<td>${l.rollout ? `<a href="#/rollout/${encodeURIComponent(l.rollout)}">${esc(l.rollout)}</a>` : ""}</td>`}
    <td>${esc(l.text)}</td><td>${esc(l.detail || "")}</td></tr>`).join("")}</tbody></table>`;
}

// ---- a machine ----
async function renderMachine(name) {
  $("#crumbs").innerHTML = `<a href="#/">fleet</a> / machine ${esc(name)}`;
  let d;
  try { d = await api("/api/machines/" + encodeURIComponent(name)); } catch (e) { $("#main").innerHTML = `<p class="bad">${esc(e.message)}</p>`; return; }
  const m = d.machine, s = d.status || {};
  const cs = Object.keys(m.checks || {}).sort();
  $("#main").innerHTML = `
    <h1>${esc(m.node)} ${stateTag(m.state)}</h1>
    ${m.attention ? `<div class="card bad">${esc(m.attention)}</div>` : ""}
    <div class="card"><div class="kv">
      <div>online</div><div><span class="dot ${m.online ? "on" : ""}"></span>${m.online ? "online" : "offline"} since ${esc(m.since || "—")}</div>
      <div>last seen</div><div>${ago(m.last_seen)}</div>
      <div>runs</div><div><code>${esc(m.current || "—")}</code></div>
      <div>should run</div><div><code>${esc(m.desired || "— (no desired state)")}</code></div>
      <div>booted</div><div><code>${esc(m.booted || "—")}</code>${m.needs_reboot ? ` <span class="warn">needs reboot</span>` : ""}</div>
      <div>rollout, generation</div><div>${m.rollout ? `<a href="#/rollout/${encodeURIComponent(m.rollout)}">${esc(m.rollout)}</a>` : "—"} gen ${m.gen || 0} (applied ${m.applied_gen})</div>
      <div>groups</div><div>${esc((m.groups || []).join(", ") || "—")}</div>
      <div>NixOS, labd</div><div>${esc(s.nixos_version || "—")}, ${esc(s.labd_version || "—")}</div>
    </div></div>
    ${m.error ? `<h2>Last error</h2><pre id="error">${esc(m.error)}</pre>` : ""}
    ${(m.problems || []).length ? `<h2>Problems</h2><ul>${m.problems.map((p) => `<li class="bad">${esc(p)}</li>`).join("")}</ul>` : ""}
    <h2>Health checks</h2>${cs.length ? `<table><tbody>${cs.map((n) => { const r = m.checks[n]; return `<tr><td>${esc(n)}</td><td class="${r.at && !r.ok ? "bad" : ""}">${!r.at ? "not run yet" : r.ok ? "ok" : "FAIL"}</td><td class="muted">${r.at ? ago(new Date(r.at).toISOString()) : ""}</td><td>${esc(r.detail || "")}</td></tr>`; }).join("")}</tbody></table>` : `<p class="muted">none configured</p>`}
    <h2>Generations</h2>${d.generations.length ? `<table id="generations"><thead><tr><th>#</th><th>system</th><th>created</th><th></th></tr></thead><tbody>${d.generations.slice().reverse().map((g) => `<tr><td>${g.n}</td><td><code title="${esc(g.toplevel)}">${esc(short(g.toplevel))}</code></td><td class="muted">${g.created ? esc(new Date(g.created).toLocaleString()) : "—"}</td><td>${g.current ? "current" : ""}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">not reported</p>`}
    <h2>Recent events</h2>${lines(d.lines, false)}`;
}

// ---- routing and the live stream ----
function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const [page, arg] = [h.split("/")[0], decodeURIComponent(h.split("/").slice(1).join("/"))];
  state.page = page;
  if (page === "rollout") return renderRollout(arg);
  if (page === "machine") return renderMachine(arg);
  return renderFleet();
}
let pending = null;
function refresh() { // detail pages re-read their data, at most once a second
  if (state.page !== "rollout" && state.page !== "machine") return renderFleet();
  if (pending) return;
  pending = setTimeout(() => { pending = null; route(); }, 1000);
}
function connect() {
  const es = new EventSource("/api/live");
  const live = $("#live");
  es.addEventListener("snapshot", (e) => {
    state.fleet = JSON.parse(e.data);
    live.textContent = "live"; live.className = "live on";
    refresh();
  });
  es.addEventListener("update", (e) => {
    const u = JSON.parse(e.data), d = state.fleet;
    if (!d) return;
    const byName = new Map(d.machines.map((m) => [m.node, m]));
    for (const m of u.machines || []) byName.set(m.node, m);
    for (const g of u.gone || []) byName.delete(g);
    d.machines = [...byName.values()].sort((a, b) => rank(a) - rank(b) || a.node.localeCompare(b.node));
    d.counts = u.counts; d.rollouts = u.rollouts; d.now = u.now;
    refresh();
  });
  es.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
}
// the server's order (render.ByAttention): its rank, then the name
function rank(m) { return m.rank ?? 99; }
window.addEventListener("hashchange", route);
api("/api/whoami").then((w) => { state.who = w; $("#who").textContent = w.user + " (" + w.role + ")"; }).catch(() => {});
connect();
route();
