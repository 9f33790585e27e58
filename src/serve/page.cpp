// The search page (GET /): a query box, a grid of thumbnails with scores, and search by image
// (drop one on the page or choose a file). Static: everything it shows comes from the API, with
// the API key (when the server wants one) sent as a Bearer header, never put in a URL.
#include "serve/server.h"

namespace torchclip::serve {

const char* search_page_html() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>torchclip search</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #fafafa; color: #222; }
  header { display: flex; gap: .5rem; align-items: center; padding: .8rem 1rem; background: #fff; border-bottom: 1px solid #ddd;
           position: sticky; top: 0; flex-wrap: wrap; }
  header h1 { font-size: 1.1rem; margin: 0 .8rem 0 0; }
  #q { flex: 1; min-width: 14rem; font-size: 1rem; padding: .45rem .6rem; }
  #key { width: 12rem; padding: .45rem .6rem; }
  button, select { font-size: 1rem; padding: .4rem .8rem; }
  #status { padding: .5rem 1rem; color: #555; min-height: 1.2rem; }
  #status.error { color: #b00020; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: .8rem; padding: 0 1rem 2rem; }
  figure.hit { margin: 0; background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; overflow: hidden; }
  figure.hit img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #eee; display: block; }
  figure.hit figcaption { font-size: .75rem; padding: .3rem .45rem; overflow-wrap: anywhere; }
  figure.hit .score { font-weight: 600; }
  body.dragging { outline: 4px dashed #4a7; outline-offset: -8px; }
</style>
</head>
<body>
<header>
  <h1>torchclip</h1>
  <input id="q" type="search" placeholder="describe an image, or drop one on the page" autofocus>
  <select id="k" title="results"><option>10</option><option selected>20</option><option>50</option><option>100</option></select>
  <button id="go">Search</button>
  <label title="search by an image file">image <input id="file" type="file" accept="image/*"></label>
  <input id="key" type="password" placeholder="API key" hidden>
</header>
<div id="status"></div>
<main id="results"></main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let blobUrls = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value || sessionStorage.getItem("torchclip-key") || "";
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(body) {
  const r = await fetch("/v1/search", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const j = await r.json().catch(() => ({ error: { message: "HTTP " + r.status } }));
  if (!r.ok) throw new Error(j.error ? j.error.message : "HTTP " + r.status);
  return j;
}

async function thumbnail(img, id) {
  const h = headers();
  delete h["Content-Type"];
  const r = await fetch("/v1/thumbnail/" + id, { headers: h });
  if (!r.ok) { img.alt = "no thumbnail (" + r.status + ")"; return; }
  const url = URL.createObjectURL(await r.blob());
  blobUrls.push(url);
  img.src = url;
}

function show(result, label, ms) {
  blobUrls.forEach((u) => URL.revokeObjectURL(u));
  blobUrls = [];
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of result.hits) {
    const fig = document.createElement("figure");
    fig.className = "hit";
    fig.dataset.path = hit.path;
    fig.dataset.score = hit.score;
    fig.dataset.rank = hit.rank;
    const img = document.createElement("img");
    img.alt = hit.path;
    const cap = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = (typeof hit.score === "number" ? hit.score.toFixed(3) : "n/a") + " ";
    cap.append(score, hit.path);
    fig.append(img, cap);
    grid.append(fig);
    thumbnail(img, hit.id);
  }
  status(result.hits.length + " results for " + label + " in " + ms.toFixed(0) + " ms");
}

async function search(body, label) {
  status("searching...");
  const t0 = performance.now();
  try {
    const j = await api(Object.assign({ k: Number($("k").value) }, body));
    show(j.results[0], label, performance.now() - t0);
  } catch (e) {
    status(e.message, true);
  }
}

function searchText() {
  const q = $("q").value.trim();
  if (q) search({ query: q }, "\u201c" + q + "\u201d");
}

function searchFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const data = String(reader.result);
    search({ image: data.slice(data.indexOf(",") + 1) }, "image " + file.name);
  };
  reader.readAsDataURL(file);
}

$("go").addEventListener("click", searchText);
$("q").addEventListener("keydown", (e) => { if (e.key === "Enter") searchText(); });
$("k").addEventListener("change", searchText);
$("file").addEventListener("change", (e) => searchFile(e.target.files[0]));
$("key").addEventListener("change", () => sessionStorage.setItem("torchclip-key", $("key").value));
document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  if (e.dataTransfer.files.length) searchFile(e.dataTransfer.files[0]);
});
fetch("/health").then((r) => r.json()).then((h) => {
  if (h.auth_required) $("key").hidden = false;
  status(h.images + " images indexed by " + h.model);
}).catch(() => status("the server did not answer /health", true));
</script>
</body>
</html>
)HTML";
}

}  // namespace torchclip::serve
