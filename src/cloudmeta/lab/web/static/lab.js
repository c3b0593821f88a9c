// The lab page: fills the static HTML from the snapshot that /api/events streams.
// Everything shown goes in through textContent (never innerHTML): names, hostnames and
// documents come from the lab's users.
"use strict";

const HOPS = { proxy: "#2563eb", agent: "#d97706", api: "#059669" };
const SVG = "http://www.w3.org/2000/svg";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "href") node.setAttribute("href", value);
    else node.dataset[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "-" : String(child)));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function result(inst) {
  const text = inst.result === "booting" && inst.step ? `booting (${inst.step})` : inst.result;
  return el("span", { class: `result ${inst.result}`, result: inst.result }, text);
}

function instanceLink(name) {
  return el("a", { href: `/instances/${encodeURIComponent(name)}` }, name);
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

function renderLab(lab) {
  const rows = lab.instances.map((i) =>
    el("tr", { name: i.name },
      el("td", {}, instanceLink(i.name)), el("td", {}, i.network), el("td", {}, i.ip),
      el("td", {}, i.path), el("td", {}, i.next_hop), el("td", {}, i.hostname),
      el("td", {}, result(i)), el("td", {}, i.boot_seconds)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted" }, "no instances yet")));
  fill(document.querySelector("#instances tbody"), rows);
  fill(document.querySelector("#networks tbody"), lab.networks.map((n) =>
    el("tr", {}, el("td", {}, n.name), el("td", {}, n.cidrs.join(", ")),
      el("td", {}, n.gateways.join(", ")), el("td", {}, n.router), el("td", { class: "id" }, n.id))));
  fill(document.querySelector("#routers tbody"), lab.routers.map((r) =>
    el("tr", {}, el("td", {}, r.name),
      el("td", {}, r.interfaces.map((i) => `${i.network} ${i.ip}`).join(", ")),
      el("td", { class: "id" }, r.id))));
  fill(document.querySelector("#nodes tbody"), lab.nodes.map((n) =>
    el("tr", {}, el("td", {}, `${n.name} (Linux ${n.kernel})`), el("td", {}, n.services),
      el("td", {}, n.pid ? `${n.pid}${n.running ? "" : " (not running)"}` : "shared"),
      el("td", {}, n.instances))));
  renderMetrics(lab.metrics);
}

function line(svg, points, color, top) {
  if (points.length < 2) return;
  const step = 300 / (points.length - 1);
  const path = document.createElementNS(SVG, "polyline");
  path.setAttribute("points", points.map((v, i) =>
    `${(i * step).toFixed(1)},${(78 - (64 * (v || 0)) / top).toFixed(1)}`).join(" "));
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", color);
  path.setAttribute("stroke-width", "1.5");
  svg.append(path);
}

function renderChart(svg, series, key) {
  svg.replaceChildren();
  const hops = Object.keys(HOPS).filter((h) => series.some((p) => h in p.hops));
  const values = series.flatMap((p) => hops.map((h) => (p.hops[h] || {})[key] || 0));
  const top = Math.max(1e-9, ...values);
  for (const hop of hops) line(svg, series.map((p) => (p.hops[hop] || {})[key]), HOPS[hop], top);
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "10");
  label.textContent = `max ${top < 1e-6 ? 0 : top.toFixed(2)}`;
  svg.append(label);
}

function renderMetrics(metrics) {
  const status = document.getElementById("metrics-status");
  const section = document.querySelector(".metrics");
  section.dataset.status = metrics.status;
  if (metrics.status !== "ok") {
    status.textContent = metrics.status;
    document.querySelectorAll(".charts svg").forEach((svg) => svg.replaceChildren());
    return;
  }
  const last = metrics.series[metrics.series.length - 1];
  status.textContent = last
    ? Object.entries(last.hops).map(([hop, v]) =>
      `${hop}: ${v.rps} req/s, p99 ${v.p99_ms == null ? "-" : v.p99_ms + " ms"}`).join(" · ") || "no requests yet"
    : "collecting (two scrapes make a rate)";
  renderChart(document.getElementById("chart-rps"), metrics.series, "rps");
  renderChart(document.getElementById("chart-p99"), metrics.series, "p99_ms");
  const seen = Object.entries(HOPS).filter(([hop]) => metrics.series.some((p) => hop in p.hops));
  document.getElementById("metrics-legend").replaceChildren(...seen.map(([hop, color]) => {
    const key = el("span", { class: "key" }, hop);
    key.style.borderColor = color;
    return key;
  }));
}

function instanceName() {
  return decodeURIComponent(location.pathname.split("/")[2] || "");
}

function renderInstance(lab) {
  const name = instanceName();
  const inst = lab.instances.find((i) => i.name === name);
  const facts = document.querySelector("#facts tbody");
  if (!inst) {
    fill(facts, [el("tr", {}, el("td", { class: "muted" }, `no lab instance ${name}`))]);
    return;
  }
  const shown = [
    ["server id", inst.server_id], ["datasource", inst.datasource], ["network", inst.network],
    ["IP", inst.ip], ["MAC", inst.mac], ["path", inst.path], ["169.254.169.254 via", inst.next_hop],
    ["hostname inside", inst.hostname], ["cloud-init", result(inst)], ["boot s", inst.boot_seconds],
    ["errors", inst.errors.join("; ") || "none"],
  ];
  fill(facts, shown.map(([key, value]) => el("tr", {}, el("th", {}, key), el("td", {}, value))));
  fill(document.querySelector("#requests tbody"), inst.requests.map((r) =>
    el("tr", {}, el("td", {}, clock(r.at)), el("td", {}, r.method), el("td", {}, r.path),
      el("td", { class: r.status === 200 ? "" : "bad" }, r.status || "no answer"),
      el("td", {}, r.milliseconds), el("td", {}, r.size))));
}

function pretty(body) {
  try {
    return JSON.stringify(JSON.parse(body), null, 2);
  } catch (_) {
    return body;
  }
}

async function fetchDocuments() {
  const box = document.getElementById("documents");
  const button = document.getElementById("refetch");
  button.disabled = true;
  try {
    const answer = await fetch(`/api/instances/${encodeURIComponent(instanceName())}/documents`);
    const body = await answer.json();
    if (!answer.ok) {
      box.replaceChildren(el("p", { class: "bad" }, body.error.message));
      return;
    }
    box.replaceChildren(...body.documents.map((d) =>
      el("article", { path: d.path, status: String(d.status) },
        el("h3", {}, `${d.method} ${d.path} `, el("span", { class: d.status === 200 ? "ok" : "bad" },
          `${d.status || "no answer"} · ${d.milliseconds} ms`)),
        el("pre", {}, pretty(d.body)))));
  } catch (err) {
    box.replaceChildren(el("p", { class: "bad" }, `cannot fetch: ${err}`));
  } finally {
    button.disabled = false;
  }
}

function connect(render) {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.addEventListener("lab", (event) => {
    const lab = JSON.parse(event.data);
    render(lab);
    live.textContent = "live";
    live.className = "live on";
    document.getElementById("updated").textContent = `updated ${clock(lab.updated)}`;
  });
  events.onerror = () => {
    live.textContent = "disconnected (retrying)";
    live.className = "live off";
  };
}

if (document.body.dataset.page === "instance") {
  document.getElementById("name").textContent = instanceName();
  document.title = `cloudmeta lab: ${instanceName()}`;
  document.getElementById("refetch").addEventListener("click", fetchDocuments);
  connect(renderInstance);
  fetchDocuments();
} else {
  connect(renderLab);
}
