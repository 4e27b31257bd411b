// The API page: renders /api/openapi.json as sections of operations, with their parameters,
// bodies, answers and the schemas they use. No framework, no inline script, nothing from elsewhere.
"use strict";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
}

// A schema as a short line: a link for a named one, array-of, or its type.
function schemaLine(schema) {
  if (!schema) return "";
  const name = refName(schema);
  if (name) return el("a", { href: "#schema-" + name }, name);
  if (schema.type === "array") {
    const span = el("span", {}, "array of ");
    span.append(schemaLine(schema.items));
    return span;
  }
  if (schema.allOf) {
    const span = el("span", {});
    schema.allOf.forEach((s, i) => { if (i) span.append(" + "); span.append(schemaLine(s)); });
    return span;
  }
  return document.createTextNode(schema.type || "object");
}

function operation(path, method, op) {
  const summary = el("summary", {},
    el("span", { class: "method " + method }, method.toUpperCase()),
    el("span", { class: "path" }, path),
    el("span", { class: "summary" }, op.summary || ""));
  const body = el("div", { class: "op-body" });
  if (op.description) body.append(el("p", {}, op.description));
  const sec = (op.security || []).map((s) => Object.keys(s)[0]).join(" or ");
  body.append(el("p", {}, el("strong", {}, "Authorization: "), sec || "none",
    op["x-oakuk-roles"] ? " (roles: " + op["x-oakuk-roles"].join(", ") + ")" : ""));
  if (op.parameters && op.parameters.length) {
    const t = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "meaning")));
    for (const p of op.parameters)
      t.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, schemaLine(p.schema)), el("td", {}, p.description || "")));
    body.append(t);
  }
  if (op.requestBody) {
    const content = op.requestBody.content || {};
    for (const [type, c] of Object.entries(content))
      body.append(el("p", {}, el("strong", {}, "Body "), el("code", {}, type), ": ", schemaLine(c.schema)));
  }
  const t = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"), el("th", {}, "body")));
  for (const [code, r] of Object.entries(op.responses || {})) {
    const content = r.content ? Object.values(r.content)[0] : null;
    t.append(el("tr", {}, el("td", {}, code), el("td", {}, r.description || ""),
      el("td", {}, content ? schemaLine(content.schema) : "")));
  }
  body.append(t);
  const d = el("details", { "data-search": (method + " " + path + " " + (op.summary || "") + " " + (op.description || "")).toLowerCase() },
    summary, body);
  return d;
}

function render(doc) {
  const main = document.getElementById("api");
  const toc = document.getElementById("toc");
  main.textContent = "";
  document.getElementById("about").textContent = (doc.info.description || "") + " Version " + doc.info.version + ".";
  const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  const list = el("ul");
  let i = 0;
  for (const [tag, ops] of byTag) {
    const id = "tag-" + i++;
    list.append(el("li", {}, el("a", { href: "#" + id }, tag + " (" + ops.length + ")")));
    const section = el("section", { "aria-labelledby": id }, el("h2", { id: id }, tag));
    ops.forEach((o) => section.append(o));
    main.append(section);
  }
  list.append(el("li", {}, el("a", { href: "#schemas" }, "schemas")));
  toc.append(list);
  const schemas = el("section", { "aria-labelledby": "schemas" }, el("h2", { id: "schemas" }, "Schemas"));
  for (const [name, s] of Object.entries((doc.components || {}).schemas || {}))
    schemas.append(el("h3", { id: "schema-" + name }, name), el("pre", {}, JSON.stringify(s, null, 2)));
  main.append(schemas);
}

function filter(word) {
  const w = word.trim().toLowerCase();
  for (const d of document.querySelectorAll("details[data-search]"))
    d.classList.toggle("hidden", w !== "" && !d.dataset.search.includes(w));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("filter").addEventListener("input", (e) => filter(e.target.value));
  fetch("/api/openapi.json", { credentials: "omit" })
    .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(render)
    .catch((err) => { document.getElementById("api").textContent = "Could not load /api/openapi.json: " + err.message; });
});
