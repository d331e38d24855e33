"""``camcli report OUT_DIR``: a static, self-contained HTML gallery of a batch run.

``OUT_DIR/index.html`` embeds the run's records as JSON and renders them with a little
inline JavaScript: summary counts, sort (input, label, score, metrics, error), filter
(text, errors only), and pages of 100 cards, so 20,000 images open without freezing the
browser. Nothing is loaded from outside: no scripts, fonts or CDNs; it opens offline and
from a file:// URL. The page state lives in the URL's hash
(``#sort=score&order=desc&q=cat&errors=1&page=2``), so a view can be bookmarked.

Thumbnails (longest side 200 px) are written once and
reused while they are newer than their source (in ``OUT_DIR/.thumbnails/``).
"""

from __future__ import annotations

import glob
import html
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, ImageOps

from camcli.atomic import write_atomic
from camcli.batch import Manifest
from camcli.errors import UsageProblem

THUMBNAIL_SIZE = 200
THUMBNAILS = ".thumbnails"  # hidden: a class folder named "thumbnails" cannot collide
PAGE_SIZE = 100


@dataclass
class ReportSummary:
    path: str
    items: int
    errors: int
    thumbnails_made: int


def _records(out_dir: str) -> list[dict]:
    """The last record of each (input, rank) over every manifest part, in file order."""
    latest: dict[tuple, dict] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(out_dir), "manifest*.jsonl"))):
        for record in Manifest.records(path):
            latest[(record["input"], record.get("rank"))] = record
    return list(latest.values())


def _thumbnail(source: str | None, target: str) -> bool | None:
    """Make ``target`` from ``source`` unless it is up to date; None when impossible."""
    if not source or not os.path.isfile(source):
        return None
    try:
        if os.path.getmtime(target) >= os.path.getmtime(source):
            return False
    except OSError:
        pass
    try:
        with Image.open(source) as image:
            image.draft("RGB", (THUMBNAIL_SIZE * 2, THUMBNAIL_SIZE * 2))
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            from io import BytesIO

            buffer = BytesIO()
            image.save(buffer, "JPEG", quality=80)
        write_atomic(target, buffer.getvalue())
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _locate(output: str | None, out_dir: str) -> str | None:
    """The output file under ``out_dir``: records hold paths as seen from the folder the
    batch ran in, so try the path, then its trailing parts under ``out_dir``."""
    if not output:
        return None
    if os.path.isfile(output) and os.path.abspath(output).startswith(
            os.path.abspath(out_dir) + os.sep):
        return output
    parts = os.path.normpath(output).split(os.sep)
    for start in range(1, len(parts)):
        candidate = os.path.join(out_dir, *parts[start:])
        if os.path.isfile(candidate):
            return candidate
    return None


def _link(path: str | None, out_dir: str) -> str | None:
    """A relative URL from index.html to ``path`` (forward slashes, percent-safe)."""
    if not path:
        return None
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    from urllib.parse import quote

    return quote(relative.replace(os.sep, "/"))


def build_report(out_dir: str, workers: int = 2) -> ReportSummary:
    """Write ``out_dir/index.html`` (and missing thumbnails) from the run's manifests.

    Raises:
        UsageProblem: ``out_dir`` has no manifest.
    """
    records = _records(out_dir)
    if not records and not glob.glob(os.path.join(glob.escape(out_dir), "manifest*.jsonl")):
        raise UsageProblem(f"{out_dir} has no manifest.jsonl: run camcli batch --out "
                           f"{out_dir} first")
    thumbs_dir = os.path.join(out_dir, THUMBNAILS)
    jobs, items = [], []
    for number, record in enumerate(records):
        output = _locate(record.get("output"), out_dir)
        stem = f"{number:07d}"
        if output:
            relative = os.path.relpath(os.path.abspath(output), os.path.abspath(out_dir))
            stem = os.path.splitext(relative)[0]
        overlay_thumb = os.path.join(thumbs_dir, stem + ".overlay.jpg")
        original_thumb = os.path.join(thumbs_dir, stem + ".original.jpg")
        jobs.append((output, overlay_thumb))
        jobs.append((record.get("input") if record.get("error") is None else None,
                     original_thumb))
        top = (record.get("top") or [[None, None, None]])[0]
        items.append({
            "input": record.get("input"),
            "output": _link(output, out_dir),
            "overlay": _link(overlay_thumb, out_dir) if output else None,
            "original": _link(original_thumb, out_dir),
            "label": record.get("label"),
            "score": record.get("score"),
            "class_index": record.get("class_index"),
            "predicted": top[1],
            "predicted_score": top[2],
            "method": record.get("method"),
            "rank": record.get("rank"),
            "metrics": record.get("metrics"),
            "error": record.get("error"),
        })
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        made = list(pool.map(lambda job: _thumbnail(*job), jobs))
    for item, original_made in zip(items, made[1::2], strict=True):
        if original_made is None:
            item["original"] = None
    path = os.path.join(out_dir, "index.html")
    write_atomic(path, render_html(items, os.path.basename(os.path.abspath(out_dir)))
                 .encode("utf-8"))
    errors = sum(1 for item in items if item["error"])
    return ReportSummary(path, len(items), errors, sum(1 for m in made if m))


def render_html(items: list[dict], title: str) -> str:
    """The page: inline CSS and JavaScript, the records as embedded JSON."""
    data = json.dumps(items, ensure_ascii=False).replace("</", "<\\/")
    return _PAGE.replace("__TITLE__", html.escape(f"camcli report: {title}")) \
        .replace("__PAGE_SIZE__", str(PAGE_SIZE)).replace("__DATA__", data)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .5em; }
#summary { margin-bottom: 1em; }
#summary span { display: inline-block; margin-right: 1.5em; }
#controls { position: sticky; top: 0; background: #fafafa; padding: .5em 0; z-index: 1; }
#controls label { margin-right: 1em; }
#gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr));
           gap: 12px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }
.card.error { border: 2px solid #c0392b; background: #fdecea; }
.card .pics { display: flex; gap: 6px; min-height: 60px; }
.card img { width: 200px; height: auto; max-height: 200px; object-fit: contain;
            background: #eee; }
.card .path { font-family: monospace; font-size: 12px; word-break: break-all; }
.card .err { color: #c0392b; font-weight: bold; }
.metrics { font-size: 12px; color: #555; }
#pager { margin: 1em 0; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div id="summary"></div>
<div id="controls">
  <label>Sort <select id="sort">
    <option value="input">input</option><option value="label">label</option>
    <option value="score">score</option><option value="deletion_auc">deletion AUC</option>
    <option value="insertion_auc">insertion AUC</option>
    <option value="average_drop">average drop</option><option value="error">error</option>
  </select></label>
  <label><select id="order"><option value="asc">ascending</option>
    <option value="desc">descending</option></select></label>
  <label>Filter <input id="q" type="search" placeholder="label or path"></label>
  <label><input id="errors" type="checkbox"> errors only</label>
  <span id="count"></span>
</div>
<div id="pager"></div>
<div id="gallery"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const ITEMS = JSON.parse(document.getElementById("data").textContent);
const PAGE_SIZE = __PAGE_SIZE__;
const state = {sort: "input", order: "asc", q: "", errors: false, page: 1};

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const key of ["sort", "order", "q"]) if (params.has(key)) state[key] = params.get(key);
  state.errors = params.get("errors") === "1";
  state.page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
}
function writeHash() {
  const params = new URLSearchParams({sort: state.sort, order: state.order, q: state.q,
                                      errors: state.errors ? "1" : "0", page: state.page});
  history.replaceState(null, "", "#" + params.toString());
}
function key(item) {
  if (state.sort === "error") return item.error ? 1 : 0;
  if (["deletion_auc", "insertion_auc", "average_drop"].includes(state.sort))
    return item.metrics ? item.metrics[state.sort] : null;
  return item[state.sort];
}
function compare(a, b) {
  const x = key(a), y = key(b);
  if (x === y) return 0;
  if (x === null || x === undefined) return 1;
  if (y === null || y === undefined) return -1;
  const sign = state.order === "desc" ? -1 : 1;
  return (x < y ? -1 : 1) * sign;
}
function fmt(value, digits) { return value === null || value === undefined ? "–" :
  Number(value).toFixed(digits); }
function text(tag, cls, content) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  node.textContent = content;
  return node;
}
function card(item) {
  const node = document.createElement("div");
  node.className = item.error ? "card error" : "card";
  node.dataset.score = item.score === null ? "" : item.score;
  const pics = document.createElement("div");
  pics.className = "pics";
  for (const [src, alt] of [[item.original, "original"], [item.overlay, "heatmap"]]) {
    if (!src) continue;
    const img = document.createElement("img");
    img.src = src; img.alt = alt; img.loading = "lazy";
    if (alt === "heatmap" && item.output) {
      const link = document.createElement("a");
      link.href = item.output; link.appendChild(img); pics.appendChild(link);
    } else pics.appendChild(img);
  }
  node.appendChild(pics);
  node.appendChild(text("div", "path", item.input));
  if (item.error) {
    node.appendChild(text("div", "err", "error: " + item.error));
  } else {
    node.appendChild(text("div", "", "predicted: " + item.predicted + " " +
                          fmt(item.predicted_score * 100, 1) + "%"));
    node.appendChild(text("div", "", "explained: " + item.label + " (class " +
                          item.class_index + ") " + fmt(item.score * 100, 1) + "%" +
                          (item.rank ? " — rank " + item.rank : "") + " · " + item.method));
    if (item.metrics) node.appendChild(text("div", "metrics",
      "deletion AUC " + fmt(item.metrics.deletion_auc, 3) + " · insertion AUC " +
      fmt(item.metrics.insertion_auc, 3) + " · average drop " +
      fmt(item.metrics.average_drop, 1) + "%" + (item.metrics.increase ? " · increase" : "")));
  }
  return node;
}
function summary() {
  const errors = ITEMS.filter(i => i.error).length;
  const ok = ITEMS.length - errors;
  const parts = [["records", ITEMS.length], ["written", ok], ["errors", errors]];
  const scored = ITEMS.filter(i => !i.error && i.score !== null);
  if (scored.length) parts.push(["mean score",
    fmt(100 * scored.reduce((s, i) => s + i.score, 0) / scored.length, 1) + "%"]);
  const measured = ITEMS.filter(i => i.metrics);
  for (const name of ["deletion_auc", "insertion_auc", "average_drop"]) {
    if (!measured.length) continue;
    const mean = measured.reduce((s, i) => s + i.metrics[name], 0) / measured.length;
    parts.push(["mean " + name.replace("_", " "),
                name === "average_drop" ? fmt(mean, 1) + "%" : fmt(mean, 3)]);
  }
  const box = document.getElementById("summary");
  box.textContent = "";
  for (const [name, value] of parts) box.appendChild(text("span", "", name + ": " + value));
}
function render() {
  const q = state.q.toLowerCase();
  let rows = ITEMS.filter(i => (!state.errors || i.error) && (!q ||
    (i.label || "").toLowerCase().includes(q) || (i.input || "").toLowerCase().includes(q)));
  rows = rows.slice().sort(compare);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages);
  const gallery = document.getElementById("gallery");
  gallery.textContent = "";
  const fragment = document.createDocumentFragment();
  for (const item of rows.slice((state.page - 1) * PAGE_SIZE, state.page * PAGE_SIZE))
    fragment.appendChild(card(item));
  gallery.appendChild(fragment);
  document.getElementById("count").textContent = rows.length + " shown";
  const pager = document.getElementById("pager");
  pager.textContent = "";
  const prev = document.createElement("button");
  prev.textContent = "◀ previous"; prev.disabled = state.page <= 1;
  prev.onclick = () => { state.page -= 1; update(); };
  const next = document.createElement("button");
  next.textContent = "next ▶"; next.disabled = state.page >= pages;
  next.onclick = () => { state.page += 1; update(); };
  pager.append(prev, text("span", "", " page " + state.page + " of " + pages + " "), next);
  for (const id of ["sort", "order", "q"]) document.getElementById(id).value = state[id];
  document.getElementById("errors").checked = state.errors;
}
function update() { writeHash(); render(); }
for (const id of ["sort", "order", "q", "errors"]) {
  document.getElementById(id).addEventListener(id === "q" ? "input" : "change", event => {
    state[id] = id === "errors" ? event.target.checked : event.target.value;
    state.page = 1;
    update();
  });
}
readHash();
summary();
render();
</script>
</body>
</html>
"""
