// prismrec web page: plain JS against the JSON API of this server (no external resources).
"use strict";
const COLORS = ["#1e88e5", "#fb8c00", "#43a047", "#8e24aa", "#e53935", "#00897b"];
const ID_COLOR = "#90a4ae"; // the behaviour/ID part of a score
const $ = (id) => document.getElementById(id);
const meta = new Map(); // item id (string) -> GET /items entry
let modalities = [];
let explainSupported = false;
let userTotal = 0;
let generation = 0; // a newer request makes the answers of older ones stale

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = body.detail;
    const e = new Error(typeof d === "string" ? d : (d && d[0] && d[0].msg) || `HTTP ${r.status}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

function showError(msg) {
  $("error").textContent = msg || "";
  $("error").hidden = !msg;
}

function kValue() {
  return Math.max(1, Math.min(100, parseInt($("k-input").value, 10) || 10));
}

// -- item metadata (titles, thumbnails) --------------------------------------------------------
async function loadMeta(ids) {
  const missing = [...new Set(ids.map(String))].filter((id) => !meta.has(id));
  for (let s = 0; s < missing.length; s += 200) {
    const chunk = missing.slice(s, s + 200);
    try {
      const q = chunk.map((id) => `ids=${encodeURIComponent(id)}`).join("&");
      const body = await api(`/items?${q}`);
      body.items.forEach((info) => meta.set(String(info.item), info));
    } catch (err) {
      chunk.forEach((id) => meta.set(id, { item: id })); // shown by id only
    }
  }
}

function itemLabel(id) {
  const info = meta.get(String(id));
  return info && info.title ? info.title : `item ${id}`;
}

function itemView(id, withThumbs) {
  const info = meta.get(String(id)) || {};
  const a = document.createElement("span");
  a.className = "item";
  a.dataset.item = String(id);
  a.title = info.title ? `item ${id}` : "";
  if (info.image) {
    const img = document.createElement("img");
    img.className = "thumb";
    img.loading = "lazy";
    img.alt = "";
    img.src = info.image;
    a.appendChild(img);
  } else if (withThumbs) { // keep the titles of a list in one column
    const blank = document.createElement("span");
    blank.className = "thumb";
    a.appendChild(blank);
  }
  const t = document.createElement("span");
  t.className = info.title ? "title" : "bare-id";
  t.textContent = itemLabel(id);
  a.appendChild(t);
  a.addEventListener("click", () => showSimilar(id));
  return a;
}

function likeButton(id) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "like";
  b.textContent = "+";
  b.title = "add to the items you like";
  b.addEventListener("click", (e) => {
    e.stopPropagation();
    const ids = likedIds();
    if (!ids.includes(String(id))) ids.push(String(id));
    $("liked-input").value = ids.join(", ");
  });
  return b;
}

async function fillList(el, items, scores) {
  await loadMeta(items);
  const withThumbs = items.some((id) => (meta.get(String(id)) || {}).image);
  el.replaceChildren();
  items.forEach((id, j) => {
    const li = document.createElement("li");
    li.dataset.item = String(id);
    li.appendChild(itemView(id, withThumbs));
    if (scores) {
      const s = document.createElement("span");
      s.className = "score";
      s.textContent = Number.isInteger(scores[j]) ? String(scores[j]) : scores[j].toFixed(3);
      li.appendChild(s);
    }
    li.appendChild(likeButton(id));
    el.appendChild(li);
  });
}

// -- explanations ------------------------------------------------------------------------------
function partColor(name) {
  return name === "id" ? ID_COLOR : COLORS[Math.max(0, modalities.indexOf(name)) % COLORS.length];
}

function contributionBar(e) {
  const bar = document.createElement("div");
  bar.className = "bar";
  const contrib = e.contributions;
  const names = Object.keys(contrib);
  const total = names.reduce((t, m) => t + Math.abs(contrib[m]), 0) || 1;
  bar.title = names.map((m) => `${m}: ${contrib[m].toFixed(3)}`).join(" + ")
    + (e.score === null ? "" : ` = ${e.score.toFixed(3)}`);
  names.forEach((m) => {
    const span = document.createElement("span");
    span.style.width = `${(100 * Math.abs(contrib[m])) / total}%`;
    span.style.background = partColor(m);
    span.dataset.part = m;
    if (contrib[m] < 0) span.className = "negative";
    span.title = `${m}: ${contrib[m].toFixed(3)}`;
    bar.appendChild(span);
  });
  return bar;
}

async function addExplanations(user, items, gen) {
  if (!explainSupported) return;
  const lis = $("recommendations").children;
  await Promise.all(items.map(async (id, j) => {
    try {
      const e = await api(`/explain?user=${encodeURIComponent(user)}&item=${encodeURIComponent(id)}`);
      if (gen === generation && lis[j]) lis[j].appendChild(contributionBar(e));
    } catch (err) { /* no bar for this item */ }
  }));
}

// -- the three ways to fill the page -----------------------------------------------------------
function setMode(mode, user) {
  const rec = $("recommendations");
  rec.dataset.mode = mode;
  rec.dataset.user = user || "";
  $("legend").hidden = !(explainSupported && mode === "user");
  $("prompt").hidden = mode === "user" || mode === "liked";
}

async function showPopular(gen) {
  const body = await api(`/popular?k=${kValue()}`);
  if (gen !== generation) return;
  $("history").replaceChildren();
  $("history-count").textContent = "";
  $("history-title").textContent = "History";
  $("recommendations-title").textContent = "Most popular items (training interactions)";
  await fillList($("recommendations"), body.items, body.scores);
  setMode("popular");
}

async function recommend(user) {
  user = String(user).trim();
  if (!user) return;
  const gen = ++generation;
  showError("");
  try {
    const rec = await api(`/recommend?user=${encodeURIComponent(user)}&k=${kValue()}&fallback=popular`);
    if (gen !== generation) return;
    history.replaceState(null, "", `?user=${encodeURIComponent(user)}`);
    if (rec.fallback === "popular") {
      showError(`unknown user '${user}': showing the most popular items instead. Pick a known user, `
        + "press Random user, or list items you like.");
      await showPopular(gen);
      return;
    }
    const hist = await api(`/history?user=${encodeURIComponent(user)}&limit=50`);
    if (gen !== generation) return;
    $("history-title").textContent = "History";
    await fillList($("history"), hist.items);
    $("history-count").textContent = `(${hist.items.length})`;
    $("recommendations-title").textContent = `Recommendations for user ${rec.user}`;
    await fillList($("recommendations"), rec.items, rec.scores);
    setMode("user", user);
    await addExplanations(user, rec.items, gen);
  } catch (err) {
    if (gen !== generation) return;
    $("history").replaceChildren();
    $("recommendations").replaceChildren();
    showError(err.message);
  }
}

function likedIds() {
  return $("liked-input").value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

async function recommendForLiked() {
  const ids = likedIds();
  if (!ids.length) return;
  const gen = ++generation;
  showError("");
  try {
    // ids are sent as the strings typed: the server matches ids as strings ("12" is item 12)
    const rec = await api("/recommend", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ items: ids, k: kValue() }),
    });
    if (gen !== generation) return;
    history.replaceState(null, "", location.pathname);
    $("history-title").textContent = "Items you like";
    await fillList($("history"), ids);
    $("history-count").textContent = `(${ids.length})`;
    $("recommendations-title").textContent = "Recommendations for the items you like";
    await fillList($("recommendations"), rec.items, rec.scores);
    setMode("liked");
  } catch (err) {
    if (gen === generation) showError(err.message);
  }
}

async function randomUser() {
  if (!userTotal) return;
  const offset = Math.floor(Math.random() * userTotal);
  const body = await api(`/users?offset=${offset}&limit=1`);
  if (body.users.length) {
    $("user-input").value = String(body.users[0]);
    await recommend(body.users[0]);
  }
}

async function showSimilar(item) {
  try {
    const s = await api(`/similar?item=${encodeURIComponent(item)}&k=10`);
    await loadMeta([item]);
    const info = meta.get(String(item));
    $("similar-to").textContent = info && info.title ? `${info.title} (item ${item})` : `item ${item}`;
    await fillList($("similar"), s.items, s.scores);
  } catch (err) {
    showError(err.message);
  }
}

function drawLegend() {
  const legend = $("legend");
  legend.title = "share of each part in the score; a faded part lowers the score";
  legend.append("score parts:");
  ["id", ...modalities].forEach((m) => {
    const i = document.createElement("i");
    i.style.background = partColor(m);
    legend.append(i, m === "id" ? "id (behaviour)" : m);
  });
}

async function init() {
  const health = await api("/health");
  modalities = Object.keys(health.modalities);
  explainSupported = health.explain;
  $("model-info").textContent =
    `${health.model} · ${health.users} users · ${health.items} items · ${modalities.join(", ") || "no modalities"}`;
  if (explainSupported) drawLegend();
  const users = await api("/users?limit=200");
  userTotal = users.total;
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
  $("random-user").addEventListener("click", () => randomUser().catch((err) => showError(err.message)));
  $("liked-form").addEventListener("submit", (e) => {
    e.preventDefault();
    recommendForLiked();
  });
  $("liked-clear").addEventListener("click", () => { $("liked-input").value = ""; });
  const initial = new URLSearchParams(location.search).get("user");
  if (initial) {
    $("user-input").value = initial;
    await recommend(initial);
  } else {
    await showPopular(++generation);
  }
  document.body.dataset.ready = "1";
}

init().catch((err) => showError(err.message));
