// The dashboard (docs/dashboard.md): applications, services and instances kept live by the root's
// event stream (GET /api/v1/events), registration with every problem at its JSON path, a form for
// one service, deploy/undeploy/scale/explain, clusters and nodes, an instance's console. Tokens
// live in this script's memory only; every request carries them in the Authorization header, so
// no cookie exists for another site to ride on. No framework, no inline script, nothing loaded
// from elsewhere.
"use strict";

const session = { token: null, refresh: null, user: null, role: null, stream: null };
const data = { applications: [], services: [], clusters: [] };
const ui = { view: "apps", consoleOf: null, consoleTimer: null, notes: new Map(), explains: new Map() };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function sleep(ms) { return new Promise((done) => setTimeout(done, ms)); }

// ---- the API ----

// {status, body, error}: body is the parsed JSON (or text), error a sentence for a failed request.
async function api(method, path, body, retried) {
  const headers = { "Accept": "application/json" };
  if (session.token) headers["Authorization"] = "Bearer " + session.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : body, cache: "no-store" });
  } catch (e) {
    return { status: 0, body: null, error: "the root did not answer: " + e.message };
  }
  if (r.status === 401 && session.refresh && !retried && path !== "/api/auth/refresh") {
    if (await refreshTokens()) return api(method, path, body, true);
    loggedOut("Your session has expired: log in again.");
  }
  const text = await r.text();
  let parsed = text;
  try { parsed = text ? JSON.parse(text) : null; } catch (e) { /* not JSON: kept as text */ }
  let error = null;
  if (!r.ok) {
    const e = parsed && parsed.error;
    error = e && e.message ? e.message : "HTTP " + r.status;
  }
  return { status: r.status, body: parsed, error };
}

async function refreshTokens() {
  const r = await fetch("/api/auth/refresh", { method: "POST", headers: { "Authorization": "Bearer " + session.refresh } })
    .catch(() => null);
  if (!r || !r.ok) return false;
  const t = await r.json();
  session.token = t.token;
  session.refresh = t.refresh_token;
  return true;
}

// ---- session ----

async function login(ev) {
  ev.preventDefault();
  const user = $("login-user").value, password = $("login-password").value;
  $("login-error").textContent = "";
  const r = await api("POST", "/api/auth/login", JSON.stringify({ username: user, password }));
  if (r.status !== 200) {
    $("login-error").textContent = r.error || "login failed";
    return;
  }
  $("login-password").value = "";
  session.token = r.body.token;
  session.refresh = r.body.refresh_token;
  session.user = user;
  session.role = r.body.role;
  $("who").textContent = user + " (" + session.role + ")";
  $("login-view").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  show("apps");
  follow();
}

function loggedOut(message) {
  session.token = session.refresh = session.user = session.role = null;
  if (session.stream) session.stream.abort();
  session.stream = null;
  closeConsole();
  data.applications = []; data.services = []; data.clusters = [];
  $("apps").replaceChildren();
  ui.notes.clear(); ui.explains.clear();
  for (const v of ["apps", "register", "infra"]) $(v + "-view").hidden = true;
  $("nav").hidden = true;
  $("session").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  $("login-user").focus();
}

function show(view) {
  ui.view = view;
  for (const b of document.querySelectorAll("#nav button"))
    b.setAttribute("aria-current", b.dataset.view === view ? "page" : "false");
  for (const v of ["apps", "register", "infra"]) $(v + "-view").hidden = v !== view;
  render();
}

// ---- the event stream: what the views show ----

function setLive(on, text) {
  $("live").textContent = text;
  $("live").className = on ? "" : "off";
}

// Reads server-sent events from the stream (a fetch, so the token travels in a header) and opens
// a new one whenever it ends: the root ends each within 300 s or when the token expires.
async function follow() {
  while (session.token) {
    const ctrl = new AbortController();
    session.stream = ctrl;
    try {
      const r = await fetch("/api/v1/events", { headers: { "Authorization": "Bearer " + session.token },
        signal: ctrl.signal, cache: "no-store" });
      if (r.status === 401) {
        if (!(await refreshTokens())) { loggedOut("Your session has expired: log in again."); return; }
        continue;
      }
      if (!r.ok) throw new Error("HTTP " + r.status);
      setLive(true, "live");
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let at;
        while ((at = buf.indexOf("\n\n")) >= 0) {
          onEvent(buf.slice(0, at));
          buf = buf.slice(at + 2);
        }
      }
    } catch (e) {
      if (!session.token || ctrl.signal.aborted) return;
    }
    if (!session.token) return;
    setLive(false, "reconnecting…");
    await sleep(1500);
  }
}

function onEvent(block) {
  let name = "message";
  const lines = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) lines.push(line.slice(5).replace(/^ /, ""));
  }
  if (!(name in data) || lines.length === 0) return;
  try { data[name] = JSON.parse(lines.join("\n")); } catch (e) { return; }
  render();
}

function render() {
  if (!session.token) return;
  if (ui.view === "apps") renderApps();
  if (ui.view === "infra") renderInfra();
}

// ---- applications, services, instances ----

function nodeOf(inst) {
  for (const c of data.clusters)
    if (c.id === inst.cluster_id)
      for (const n of c.nodes || []) if (n.id === inst.node_id) return n;
  return null;
}

// KVM or TCG for a placed unikernel instance: its node's accelerator, TCG when emulated.
function accelOf(inst) {
  const p = inst.placement || {};
  if (p.virtualization !== "unikernel") return p.virtualization ? "—" : "";
  const n = nodeOf(inst);
  if (!n || !n.unikernel) return "?";
  if (p.arch && n.architecture && p.arch !== n.architecture) return "TCG (emulated)";
  return (n.unikernel.accel || "?").toUpperCase();
}

function fmt(v, unit) { return typeof v === "number" ? (Math.round(v * 10) / 10) + unit : ""; }

function codeText(doc) {
  const c = doc.code;
  if (c && typeof c === "object") return Object.entries(c).map(([k, v]) => k + ": " + v).join(", ");
  return c || "";
}

function list(v) { return Array.isArray(v) ? v.join(", ") : (v || ""); }

function note(sid, text, bad) {
  ui.notes.set(sid, { text, bad });
  const n = document.querySelector('[data-note="' + CSS.escape(sid) + '"]');
  if (n) { n.textContent = text; n.className = bad ? "error" : "muted"; }
}

function active(doc) {
  return (doc.instance_list || []).filter((i) => i.status !== "UNDEPLOYED");
}

async function deploy(sid, count) {
  for (let k = 0; k < count; k++) {
    const r = await api("POST", "/api/v1/services/" + encodeURIComponent(sid) + "/instances");
    if (r.status !== 201) { note(sid, "deploy: " + r.error, true); return false; }
  }
  return true;
}

async function undeploy(sid, n) {
  const r = await api("DELETE", "/api/v1/services/" + encodeURIComponent(sid) + "/instances/" + n);
  note(sid, r.status === 200 ? "instance " + n + " is being undeployed" : "undeploy: " + r.error, r.status !== 200);
}

async function scale(sid, want) {
  const doc = data.services.find((s) => s.microserviceID === sid);
  if (!doc) return;
  const now = active(doc).sort((a, b) => a.instance_number - b.instance_number);
  if (want > now.length) {
    if (await deploy(sid, want - now.length)) note(sid, "scaling to " + want + ": " + (want - now.length) + " more requested");
  } else if (want < now.length) {
    for (const inst of now.slice(want).reverse()) await undeploy(sid, inst.instance_number);
    note(sid, "scaling to " + want + ": " + (now.length - want) + " being undeployed");
  } else {
    note(sid, "already " + want);
  }
}

async function explain(sid) {
  const r = await api("GET", "/api/v1/services/" + encodeURIComponent(sid) + "/explain");
  let text;
  if (r.status !== 200) text = "explain: " + r.error;
  else {
    const e = r.body, out = [];
    out.push("Clusters (the root's choice):");
    for (const l of e.lines || []) out.push("  " + l);
    for (const i of e.instances || []) {
      out.push("Instance " + i.instance_number + ": " + i.status + (i.node_id ? " on " + i.node_id : "") +
        (i.status_detail ? " — " + i.status_detail : ""));
      for (const [c, why] of Object.entries(i.cluster_refusals || {})) out.push("  refused by " + c + ": " + why);
    }
    for (const c of e.clusters || []) {
      out.push("Nodes of cluster " + c.cluster_name + (c.error ? ": " + c.error : ":"));
      for (const l of c.lines || []) out.push("  " + l);
    }
    text = out.join("\n");
  }
  ui.explains.set(sid, text);
  const pre = document.querySelector('[data-explain="' + CSS.escape(sid) + '"]');
  if (pre) { pre.textContent = text; pre.hidden = false; pre.focus(); }
}

async function deleteService(sid, name) {
  if (!window.confirm("Delete service " + name + " and all its instances?")) return;
  const r = await api("DELETE", "/api/v1/services/" + encodeURIComponent(sid));
  if (r.status !== 200) note(sid, "delete: " + r.error, true);
}

async function deleteApp(app) {
  if (!window.confirm("Delete application " + app.application_name + " with its services and instances?")) return;
  const r = await api("DELETE", "/api/v1/applications/" + encodeURIComponent(app.applicationID));
  if (r.status !== 200) window.alert("delete: " + r.error);
}

function serviceCard(sid) {
  const scaleId = "scale-" + sid;
  const card = el("article", { class: "service", "data-service": sid, "aria-label": "service" },
    el("div", { class: "service-head" }, el("h4", { class: "name" }), el("span", { class: "badge status" })),
    el("p", { class: "facts" }),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "deploy", onclick: async () => { if (await deploy(sid, 1)) note(sid, "instance requested"); } }, "Deploy instance"),
      el("label", { class: "inline", for: scaleId }, "Instances"),
      el("input", { id: scaleId, class: "scale-to", type: "number", min: "0", max: "64", value: "1" }),
      el("button", { type: "button", class: "scale", onclick: () => scale(sid, Math.max(0, parseInt($(scaleId).value, 10) || 0)) }, "Scale"),
      el("button", { type: "button", class: "explain", onclick: () => explain(sid) }, "Explain"),
      el("button", { type: "button", class: "danger delete-service", onclick: () => deleteService(sid, card.dataset.name) }, "Delete service")),
    el("p", { class: "muted", "data-note": sid, role: "status" }),
    el("pre", { class: "explanation", "data-explain": sid, tabindex: "-1", hidden: true }),
    el("div", { class: "scroll" }, el("table", { class: "instances" },
      el("thead", {}, el("tr", {}, ...["#", "Status", "Ready", "Node", "Cluster", "Arch", "Virtualization", "Accel",
        "CPU", "Memory", "Detail", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}))));
  const n = ui.notes.get(sid);
  if (n) { card.querySelector("[data-note]").textContent = n.text; card.querySelector("[data-note]").className = n.bad ? "error" : "muted"; }
  const x = ui.explains.get(sid);
  if (x) { const pre = card.querySelector("[data-explain]"); pre.textContent = x; pre.hidden = false; }
  return card;
}

function updateCard(card, doc) {
  const sid = doc.microserviceID;
  card.dataset.name = doc.job_name || doc.microservice_name;
  card.querySelector(".name").textContent = doc.microservice_name + "." + doc.microservice_namespace;
  const st = card.querySelector(".status");
  st.textContent = doc.status + " · revision " + doc.revision;
  card.querySelector(".facts").textContent = [
    "virtualization " + list(doc.virtualization), "image " + codeText(doc), doc.arch ? "arch " + list(doc.arch) : "",
    doc.vcpus + " vCPU", doc.memory + " MB", doc.port ? "ports " + doc.port : "",
    doc.addresses && doc.addresses.rr_ip ? "service IP " + doc.addresses.rr_ip : "",
    doc.emulation ? "emulation " + doc.emulation : "", "job " + doc.job_name].filter(Boolean).join(" · ");
  const tbody = card.querySelector("tbody");
  const rows = new Map([...tbody.rows].map((r) => [r.dataset.instance, r]));
  const keep = new Set();
  for (const inst of doc.instance_list || []) {
    const key = String(inst.instance_number);
    keep.add(key);
    let row = rows.get(key);
    if (!row) {
      row = el("tr", { "data-instance": key });
      for (let k = 0; k < 11; k++) row.append(el("td"));
      row.cells[10].className = "detail";
      row.append(el("td", {},
        el("button", { type: "button", class: "console", onclick: () => openConsole(sid, inst.instance_number) }, "Console"),
        " ",
        el("button", { type: "button", class: "danger undeploy", onclick: () => undeploy(sid, inst.instance_number) }, "Undeploy")));
      tbody.append(row);
    }
    const p = inst.placement || {};
    const cells = [key, inst.status, inst.ready ? "yes" : "no", inst.node_id || "", inst.cluster_name || "",
      p.arch || (nodeOf(inst) || {}).architecture || "", p.virtualization || "", accelOf(inst),
      inst.node_id ? fmt(inst.cpu, " %") : "", inst.node_id ? fmt(inst.memory, " MB") : "", inst.status_detail || ""];
    cells.forEach((t, k) => { if (row.cells[k].textContent !== t) row.cells[k].textContent = t; });
    row.cells[1].className = "st-" + inst.status;
    row.cells[2].className = inst.ready ? "yes" : "no";
    row.querySelector(".undeploy").disabled = inst.status === "UNDEPLOYED";
  }
  for (const [key, row] of rows) if (!keep.has(key)) row.remove();
}

function renderApps() {
  const root = $("apps");
  const byId = new Map(data.services.map((s) => [s.microserviceID, s]));
  const sections = new Map([...root.children].map((s) => [s.dataset.app, s]));
  const seen = new Set();
  $("apps-empty").hidden = data.applications.length > 0;
  for (const app of data.applications) {
    const id = app.applicationID;
    seen.add(id);
    let sec = sections.get(id);
    if (!sec) {
      sec = el("section", { class: "app", "data-app": id },
        el("h3", {}),
        el("div", { class: "actions" },
          el("button", { type: "button", class: "danger delete-app", onclick: () => deleteApp(app) }, "Delete application")),
        el("div", { class: "services" }));
      sec.setAttribute("aria-label", "application " + app.application_name);
    }
    root.append(sec); /* in the stream's order */
    sec.querySelector("h3").textContent = app.application_name + "." + app.application_namespace +
      (app.userId && session.role !== "Application_Provider" ? " (" + app.userId + ")" : "");
    const box = sec.querySelector(".services");
    const cards = new Map([...box.children].map((c) => [c.dataset.service, c]));
    const keep = new Set();
    for (const sid of app.microservices || []) {
      const doc = byId.get(sid);
      if (!doc) continue;
      keep.add(sid);
      const card = cards.get(sid) || serviceCard(sid);
      box.append(card);
      updateCard(card, doc);
    }
    for (const [sid, c] of cards) if (!keep.has(sid)) c.remove();
  }
  for (const [id, s] of sections) if (!seen.has(id)) s.remove();
}

// ---- console ----

async function loadConsole() {
  const c = ui.consoleOf;
  if (!c) return;
  const r = await api("GET", "/api/v1/services/" + encodeURIComponent(c.sid) + "/instances/" + c.n + "/logs?lines=500");
  if (ui.consoleOf !== c) return;
  const pre = $("console-text");
  if (r.status === 200) {
    const text = (r.body.lines || []).join("\n");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (pre.textContent !== text) {
      pre.textContent = text;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
    $("console-status").textContent = "node " + (r.body.node || "?") + " · " + (r.body.lines || []).length +
      " lines · " + new Date().toLocaleTimeString();
  } else {
    $("console-status").textContent = "logs: " + r.error;
  }
}

function scheduleConsole() {
  clearTimeout(ui.consoleTimer);
  if (ui.consoleOf && $("console-follow").checked)
    ui.consoleTimer = setTimeout(async () => { await loadConsole(); scheduleConsole(); }, 2000);
}

async function openConsole(sid, n) {
  const doc = data.services.find((s) => s.microserviceID === sid);
  ui.consoleOf = { sid, n };
  $("console-title").textContent = "Console of " + (doc ? doc.job_name : sid) + " instance " + n;
  $("console-text").textContent = "";
  $("console-status").textContent = "loading…";
  $("console").hidden = false;
  await loadConsole();
  $("console-text").focus();
  scheduleConsole();
}

function closeConsole() {
  clearTimeout(ui.consoleTimer);
  ui.consoleOf = null;
  $("console").hidden = true;
}

// ---- registration ----

// The offsets [start, end) of the value at a JSON path ("applications[0].microservices[1].arch",
// "" for the document) in the text of a descriptor, or null when the text does not reach it.
function locate(text, want) {
  let i = 0;
  const ws = () => { while (i < text.length && " \t\r\n".includes(text[i])) i++; };
  const expect = (c) => { ws(); if (text[i] !== c) throw new Error("expected " + c); i++; };
  function str() {
    ws();
    if (text[i] !== '"') throw new Error("expected a string");
    const s = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(s, i));
  }
  function value(path) {
    ws();
    const start = i;
    if (text[i] === "{" || text[i] === "[") {
      const obj = text[i++] === "{", close = obj ? "}" : "]";
      ws();
      if (text[i] === close) i++;
      else for (let n = 0; ; n++) {
        let sub;
        if (obj) { const k = str(); expect(":"); sub = path ? path + "." + k : k; }
        else sub = path + "[" + n + "]";
        const found = value(sub);
        if (found) return found;
        ws();
        if (text[i] === ",") { i++; continue; }
        expect(close);
        break;
      }
    } else if (text[i] === '"') str();
    else {
      while (i < text.length && !",}] \t\r\n".includes(text[i])) i++;
      if (i === start) throw new Error("expected a value");
    }
    return path === want ? [start, i] : null;
  }
  try { return value(""); } catch (e) { return null; }
}

// Selects the value at path in the descriptor field, so the problem is seen where it is.
function showAt(path) {
  const area = $("descriptor");
  const at = locate(area.value, path);
  area.focus();
  if (!at) return;
  area.setSelectionRange(at[0], at[1]);
  const line = area.value.slice(0, at[0]).split("\n").length - 1;
  const height = parseFloat(getComputedStyle(area).lineHeight) || 18;
  area.scrollTop = Math.max(0, line * height - area.clientHeight / 3);
}

function problemItem(p, warning) {
  const where = locate($("descriptor").value, p.path);
  return el("li", { "data-path": p.path, class: warning ? "muted" : null },
    where ? el("button", { type: "button", class: "link", onclick: () => showAt(p.path), title: "select it in the descriptor" },
      p.path || "(document)") : el("code", {}, p.path || "(document)"),
    " ", warning ? "warning: " : "", p.message);
}

function showProblems(r, what) {
  const out = $("register-problems");
  out.replaceChildren();
  $("descriptor").setAttribute("aria-invalid", "false");
  if (r.status === 200 || r.status === 201) return false;
  $("descriptor").setAttribute("aria-invalid", "true");
  const e = (r.body && r.body.error) || {};
  const problems = e.problems || [{ path: e.path || "", message: r.error }];
  $("register-result").textContent = what + " refused (" + problems.length + " problem" +
    (problems.length === 1 ? "" : "s") + "):";
  for (const p of problems) out.append(problemItem(p, false));
  return true;
}

function showRegistered(r, what) {
  const b = r.body || {};
  const lines = [];
  for (const a of b.applications || []) {
    let line = what + ": " + a.application_name + "." + a.application_namespace + (a.change ? " (" + a.change + ")" : "");
    if (Array.isArray(a.services) && a.services.length)
      line += ": " + a.services.map((s) => s.job_name + " " + s.change + (s.revision ? " (revision " + s.revision + ")" : "")).join(", ");
    lines.push(line + ".");
  }
  $("register-result").textContent = lines.join(" ") || what + ".";
  for (const w of b.warnings || []) $("register-problems").append(problemItem(w, true));
}

async function register(method) {
  const text = $("descriptor").value;
  $("register-result").textContent = "sending…";
  const r = await api(method, "/api/v1/applications", text);
  const what = method === "POST" ? "registered" : "applied";
  if (!showProblems(r, method === "POST" ? "registration" : "apply")) showRegistered(r, what);
}

// ---- one service ----

function words(s) { return s.trim() ? s.trim().split(/\s+/) : []; }

function serviceDescriptor() {
  const virt = $("sf-virt").value.split(",");
  const kernels = words($("sf-unikernel").value); /* one per architecture, or one OCI reference */
  const images = { container: $("sf-container").value.trim(), unikernel: kernels.length > 1 ? kernels : kernels[0] || "" };
  const arch = [];
  if ($("sf-amd64").checked) arch.push("amd64");
  if ($("sf-arm64").checked) arch.push("arm64");
  const ms = {
    microserviceID: "", microservice_name: $("sf-name").value.trim(), microservice_namespace: $("sf-ns").value.trim(),
    virtualization: virt.length === 1 ? virt[0] : virt,
    code: virt.length === 1 ? images[virt[0]] : Object.fromEntries(virt.map((v) => [v, images[v]])),
    cmd: words($("sf-cmd").value), memory: parseInt($("sf-memory").value, 10), vcpus: parseInt($("sf-vcpus").value, 10),
    vgpus: 0, vtpus: 0, bandwidth_in: 0, bandwidth_out: 0, storage: 0, state: "", added_files: [],
  };
  if (arch.length) ms.arch = arch;
  if (virt.includes("unikernel")) ms.emulation = $("sf-emulation").value;
  if ($("sf-port").value.trim()) ms.port = $("sf-port").value.trim();
  if ($("sf-ip").value.trim()) ms.addresses = { rr_ip: $("sf-ip").value.trim() };
  return { sla_version: "v2.0", customerID: session.user || "", applications: [{
    applicationID: "", application_name: $("sf-app").value.trim(), application_namespace: $("sf-appns").value.trim(),
    application_desc: "", microservices: [ms] }] };
}

function updateServiceForm() {
  const virt = $("sf-virt").value.split(",");
  $("sf-container-row").hidden = !virt.includes("container");
  $("sf-unikernel-row").hidden = !virt.includes("unikernel");
  $("sf-emulation").disabled = !virt.includes("unikernel");
  $("sf-preview").textContent = JSON.stringify(serviceDescriptor(), null, 2);
}

async function addService(ev) {
  ev.preventDefault();
  const text = JSON.stringify(serviceDescriptor(), null, 2);
  $("register-result").textContent = "sending…";
  // PUT applies: it adds the service to an application of that name, or creates the application.
  const r = await api("PUT", "/api/v1/applications", text);
  $("descriptor").value = text; /* what was sent, where its problems can be shown */
  if (!showProblems(r, "the service")) showRegistered(r, "applied");
  $("register-result").scrollIntoView({ block: "nearest" });
}

// ---- clusters and nodes ----

function age(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => el("tr", {}, ...cells.map((c, k) =>
    k === 0 ? el("th", { scope: "row" }, c) : el("td", { class: typeof c === "string" && c === "silent" ? "no" : null }, c)))));
}

function renderInfra() {
  fillRows($("clusters").tBodies[0], data.clusters.map((c) => [
    c.cluster_name, c.cluster_location || "", c.active ? "active" : "silent",
    (c.active_nodes || 0) + " of " + (c.number_of_nodes || 0) + " active", String(c.cpu_cores || 0),
    (c.cumulative_memory_in_mb || 0) + " MB", age(c.aggregate_received_at_ms)]));
  const on = new Map();
  for (const s of data.services)
    for (const i of s.instance_list || [])
      if (i.node_id && i.status !== "UNDEPLOYED") {
        const key = i.cluster_id + "/" + i.node_id;
        on.set(key, (on.get(key) || []).concat(s.microservice_name + "#" + i.instance_number));
      }
  const rows = [];
  for (const c of data.clusters)
    for (const n of c.nodes || []) {
      const uk = n.unikernel;
      rows.push([n.id, c.cluster_name, n.drained ? "drained" : n.active ? "active" : "silent", n.architecture || "",
        list(n.virtualization), uk ? (uk.accel || "").toUpperCase() + (uk.emulated_archs && uk.emulated_archs.length ?
          ", emulates " + uk.emulated_archs.join(", ") : "") : "none",
        String(n.vcpus), n.memory + " of " + n.memory_total + " MB", fmt(n.cpu_percent, " %"), age(n.last_seen_ms),
        (on.get(c.id + "/" + n.id) || []).join(", ") || "none"]);
    }
  fillRows($("nodes").tBodies[0], rows);
  $("clusters-empty").hidden = data.clusters.length > 0;
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => loggedOut("Logged out."));
  for (const b of document.querySelectorAll("#nav button")) b.addEventListener("click", () => show(b.dataset.view));
  $("register-form").addEventListener("submit", (ev) => { ev.preventDefault(); register("POST"); });
  $("register-apply").addEventListener("click", () => register("PUT"));
  $("descriptor-file").addEventListener("change", async () => {
    const f = $("descriptor-file").files[0];
    if (f) $("descriptor").value = await f.text();
  });
  $("console-close").addEventListener("click", closeConsole);
  $("console-follow").addEventListener("change", scheduleConsole);
  $("service-form").addEventListener("submit", addService);
  $("service-form").addEventListener("input", updateServiceForm);
  $("service-form").addEventListener("change", updateServiceForm);
  updateServiceForm();
  setInterval(() => { if (session.token && ui.view === "infra") renderInfra(); }, 5000); /* the ages */
  $("login-user").focus();
});
