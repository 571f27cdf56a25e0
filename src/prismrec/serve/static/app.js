// prismrec web page: plain JS against the JSON API of this server (no external resources).
"use strict";
const COLORS = ["#1e88e5", "#fb8c00", "#43a047", "#8e24aa", "#e53935", "#00897b"];
const $ = (id) => document.getElementById(id);
let modalities = [];
let explainSupported = false;

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = body.detail;
    throw new Error(typeof d === "string" ? d : (d && d[0] && d[0].msg) || `HTTP ${r.status}`);
  }
  return body;
}

function showError(msg) {
  $("error").textContent = msg || "";
  $("error").hidden = !msg;
}

function itemLink(id) {
  const a = document.createElement("span");
  a.className = "item";
  a.textContent = `item ${id}`;
  a.dataset.item = String(id);
  a.addEventListener("click", () => showSimilar(id));
  return a;
}

function fillList(el, items, scores) {
  el.replaceChildren();
  items.forEach((id, j) => {
    const li = document.createElement("li");
    li.dataset.item = String(id);
    li.appendChild(itemLink(id));
    if (scores) {
      const s = document.createElement("span");
      s.className = "score";
      s.textContent = scores[j].toFixed(3);
      li.appendChild(s);
    }
    el.appendChild(li);
  });
}

function contributionBar(contrib) {
  const bar = document.createElement("div");
  bar.className = "bar";
  const names = Object.keys(contrib);
  const total = names.reduce((t, m) => t + Math.abs(contrib[m]), 0) || 1;
  names.forEach((m, j) => {
    const span = document.createElement("span");
    span.style.width = `${(100 * Math.abs(contrib[m])) / total}%`;
    span.style.background = COLORS[j % COLORS.length];
    if (contrib[m] < 0) span.className = "negative";
    span.title = `${m}: ${contrib[m].toFixed(3)}`;
    bar.appendChild(span);
  });
  return bar;
}

async function addExplanations(user, items) {
  if (!explainSupported) return;
  const lis = $("recommendations").children;
  await Promise.all(items.map(async (id, j) => {
    try {
      const e = await api(`/explain?user=${encodeURIComponent(user)}&item=${encodeURIComponent(id)}`);
      lis[j].appendChild(contributionBar(e.contributions));
    } catch (err) { /* no bar for this item */ }
  }));
}

async function recommend(user) {
  user = String(user).trim();
  if (!user) return;
  showError("");
  const k = Math.max(1, Math.min(100, parseInt($("k-input").value, 10) || 10));
  try {
    const [hist, rec] = await Promise.all([
      api(`/history?user=${encodeURIComponent(user)}&limit=50`),
      api(`/recommend?user=${encodeURIComponent(user)}&k=${k}`),
    ]);
    fillList($("history"), hist.items);
    $("history-count").textContent = `(${hist.items.length})`;
    fillList($("recommendations"), rec.items, rec.scores);
    $("recommendations").dataset.user = user;
    history.replaceState(null, "", `?user=${encodeURIComponent(user)}`);
    await addExplanations(user, rec.items);
  } catch (err) {
    $("history").replaceChildren();
    $("recommendations").replaceChildren();
    showError(err.message);
  }
}

async function showSimilar(item) {
  try {
    const s = await api(`/similar?item=${encodeURIComponent(item)}&k=10`);
    $("similar-to").textContent = `item ${item}`;
    fillList($("similar"), s.items, s.scores);
  } catch (err) {
    showError(err.message);
  }
}

async function init() {
  const health = await api("/health");
  modalities = Object.keys(health.modalities);
  explainSupported = health.explain;
  $("model-info").textContent =
    `${health.model} · ${health.users} users · ${health.items} items · ${modalities.join(", ") || "no modalities"}`;
  if (explainSupported) {
    const legend = $("legend");
    legend.hidden = false;
    legend.title = "share of each modality in the score; a faded part lowers the score";
    legend.append("per-modality contribution:");
    modalities.forEach((m, j) => {
      const i = document.createElement("i");
      i.style.background = COLORS[j % COLORS.length];
      legend.append(i, m);
    });
  }
  const users = await api("/users?limit=200");
  for (const u of users.users) {
    $("user-list").appendChild(new Option(String(u), String(u)));
    $("user-select").appendChild(new Option(String(u), String(u)));
  }
  $("user-select").addEventListener("change", (e) => {
    $("user-input").value = e.target.value;
    recommend(e.target.value);
  });
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    recommend($("user-input").value);
  });
  const initial = new URLSearchParams(location.search).get("user");
  if (initial) {
    $("user-input").value = initial;
    await recommend(initial);
  }
  document.body.dataset.ready = "1";
}

init().catch((err) => showError(err.message));
