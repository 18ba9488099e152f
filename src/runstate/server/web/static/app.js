// runstate web view: live refresh over Server-Sent Events, history filters, timeline zoom.
// Plain DOM code, no dependencies; loaded with `defer` under a CSP without inline scripts.
// Text from the store is only ever set with textContent; HTML comes from the server, escaped.
"use strict";

(function () {
  const FAILURE_TYPES = new Set(["StepFailed", "RunFailed", "RunTimedOut", "RunRetryScheduled"]);

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toISOString().replace("T", " ").slice(0, 23);
  }

  function fmtDuration(seconds) {
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
    if (m < 60) return m + "m " + String(s).padStart(2, "0") + "s";
    const h = Math.floor(m / 60);
    return h < 48 ? h + "h " + String(m % 60).padStart(2, "0") + "m" : Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function sortKeys(value) {
    if (Array.isArray(value)) return value.map(sortKeys);
    if (value && typeof value === "object") {
      const out = {};
      for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
      return out;
    }
    return value;
  }

  function compact(value, limit) {
    const text = JSON.stringify(sortKeys(value));
    return text.length <= limit ? text : text.slice(0, limit - 1) + "\u2026";
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Replace a server-rendered fragment (same id) with a freshly fetched one.
  function swap(id, html) {
    const current = document.getElementById(id);
    const template = document.createElement("template");
    template.innerHTML = html;
    const fresh = template.content.getElementById(id) || template.content.firstElementChild;
    if (current && fresh) current.replaceWith(fresh);
    return fresh;
  }

  // Re-fetch at most once per `gap` ms while events keep coming.
  function throttled(fn, gap) {
    let timer = null, again = false;
    return function () {
      if (timer) { again = true; return; }
      timer = setTimeout(async function run() {
        again = false;
        try { await fn(); } catch (err) { /* the next event retries */ }
        if (again) { timer = setTimeout(run, gap); } else { timer = null; }
      }, 150);
    };
  }

  function follow(url, onEvent) {
    const live = document.getElementById("live");
    const source = new EventSource(url);
    source.onopen = () => live && live.classList.add("on");
    source.onerror = () => live && live.classList.remove("on");
    source.onmessage = (message) => onEvent(JSON.parse(message.data));
    source.addEventListener("error", (message) => { if (message.data) source.close(); });
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  function partialUrl() {
    const params = new URLSearchParams(location.search);
    params.set("partial", "1");
    return location.pathname + "?" + params.toString();
  }

  // ---- runs page ----------------------------------------------------------------------------
  function runsPage() {
    const refresh = throttled(async () => {
      const before = new Map();
      document.querySelectorAll("#results tbody tr[data-run-id]").forEach((row) => before.set(row.dataset.runId, row.dataset.status));
      const response = await fetch(partialUrl(), { credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = swap("results", await response.text());
      if (!fresh) return;
      fresh.querySelectorAll("tbody tr[data-run-id]").forEach((row) => {
        if (before.get(row.dataset.runId) !== row.dataset.status) row.classList.add("flash");
      });
    }, 1000);
    follow("/ui/feed", refresh);
    document.addEventListener("click", (event) => {
      document.querySelectorAll("details.dropdown[open]").forEach((menu) => {
        if (!menu.contains(event.target)) menu.removeAttribute("open");
      });
    });
  }

  // ---- run page: timeline -------------------------------------------------------------------
  let zoom = 1;
  function applyZoom(keepCenter) {
    const timeline = document.getElementById("timeline");
    const canvas = document.getElementById("tl-canvas");
    const scroll = document.getElementById("tl-scroll");
    const axis = document.getElementById("tl-axis");
    if (!timeline || !canvas || !scroll || !axis) return;
    const center = keepCenter ? (scroll.scrollLeft + scroll.clientWidth / 2) / canvas.offsetWidth : 0;
    const ticks = 4 * zoom, span = parseFloat(timeline.dataset.span) || 0;
    canvas.style.width = zoom * 100 + "%";
    canvas.style.backgroundSize = 100 / ticks + "% 100%";
    axis.style.gridTemplateColumns = "repeat(" + ticks + ", 1fr)";
    axis.replaceChildren(...Array.from({ length: ticks }, (_, i) => el("span", {}, "+" + fmtDuration((span * i) / ticks))));
    const level = document.getElementById("zoom-level");
    if (level) level.textContent = zoom + "\u00d7";
    if (keepCenter) scroll.scrollLeft = center * canvas.offsetWidth - scroll.clientWidth / 2;
  }

  function wireZoom() {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-zoom]");
      if (!button) return;
      const action = button.dataset.zoom;
      zoom = action === "fit" ? 1 : action === "in" ? Math.min(zoom * 2, 256) : Math.max(zoom / 2, 1);
      applyZoom(action !== "fit");
    });
  }

  // ---- run page: history --------------------------------------------------------------------
  function applyFilters() {
    const type = document.getElementById("type-filter").value;
    const failures = document.getElementById("failures-only").checked;
    document.querySelectorAll("#event-rows tr").forEach((row) => {
      row.hidden = (type && row.dataset.type !== type) || (failures && row.dataset.failure !== "1");
    });
  }

  function historyRow(event) {
    const payload = event.payload || {};
    const failure = FAILURE_TYPES.has(event.type) || (payload.error !== undefined && payload.error !== null);
    const time = event.occurred_at || event.recorded_at;
    const row = el("tr", { "data-type": event.type, "data-failure": failure ? "1" : "0", "data-seq": String(event.seq) });
    row.append(el("td", { class: "num" }, String(event.seq)));
    const timeCell = el("td");
    timeCell.append(el("time", { datetime: time }, fmtTime(time)));
    row.append(timeCell);
    const typeCell = el("td");
    typeCell.append(el("span", { class: failure ? "etype fail" : "etype" }, event.type));
    row.append(typeCell);
    const details = el("details");
    details.append(el("summary", { class: "mono" }, Object.keys(payload).length ? compact(payload, 160) : "{}"));
    details.append(el("pre", {}, JSON.stringify(sortKeys(event), null, 2)));
    const payloadCell = el("td", { class: "payload" });
    payloadCell.append(details);
    row.append(payloadCell);
    return row;
  }

  function runPage() {
    const history = document.getElementById("history");
    const rows = document.getElementById("event-rows");
    const select = document.getElementById("type-filter");
    let last = parseInt(history.dataset.after, 10) || 0;
    let count = rows.children.length;
    select.addEventListener("change", applyFilters);
    document.getElementById("failures-only").addEventListener("change", applyFilters);
    document.addEventListener("submit", (event) => {
      const button = event.submitter;
      if (button && button.classList.contains("danger") && !window.confirm(button.textContent + " this run?")) event.preventDefault();
    });
    wireZoom();
    applyZoom(false);
    const refresh = throttled(async () => {
      const scroll = document.getElementById("tl-scroll");
      const left = scroll ? scroll.scrollLeft : 0;
      const response = await fetch(partialUrl(), { credentials: "same-origin" });
      if (!response.ok) return;
      swap("live-parts", await response.text());
      applyZoom(false);
      const fresh = document.getElementById("tl-scroll");
      if (fresh) fresh.scrollLeft = left;
    }, 1000);
    const url = history.dataset.stream + "?after_seq=" + last;
    follow(url, (event) => {
      if (event.seq <= last) return;
      last = event.seq;
      const row = historyRow(event);
      row.classList.add("flash");
      rows.append(row);
      count += 1;
      const counter = document.getElementById("event-count");
      const total = (parseInt(counter.textContent, 10) || 0) + 1;
      counter.textContent = total + " events";
      if (![...select.options].some((o) => o.value === event.type)) select.append(el("option", { value: event.type }, event.type));
      applyFilters();
      refresh();
    });
  }

  const page = document.body.dataset.page;
  if (page === "runs") runsPage();
  else if (page === "run") runPage();
})();
