"""``camcli report OUT_DIR``: a static, self-contained HTML gallery of a batch run.

``OUT_DIR/index.html`` embeds the run's records as JSON and renders them with a little
inline JavaScript: summary counts, sort (input, label, score, metrics, error), filter
(text, errors only), and pages of 100 cards, so 20,000 images open without freezing the
browser. Nothing is loaded from outside: no scripts, fonts or CDNs; it opens offline and
from a file:// URL. The page state lives in the URL's hash
(``#sort=score&order=desc&q=cat&errors=1&page=2``), so a view can be bookmarked.

When the run has been audited (``camcli audit`` wrote ``OUT_DIR/audit.json``), an "Audit"
section comes first: per class the Laplacian's smallest eigenvalues with the chosen gap
marked, a 2-D picture (t-SNE) of the spectral embedding coloured by cluster, and each
cluster's mean map (SVG), size, peak, prototypes (their overlay thumbnails) and a link that
keeps the gallery to the cluster's members (``#cluster=C:K``: class C of the audit, its
cluster K).

Thumbnails (longest side 200 px) are written once and
reused while they are newer than their source (in ``OUT_DIR/.thumbnails/``).
"""

from __future__ import annotations

import html
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

from PIL import Image, ImageOps

from camcli.analysis.audit import COLUMNS, read_audit, rows
from camcli.errors import UsageProblem
from camcli.io import locations
from camcli.io.storage import Storage, resolved
from camcli.records.manifest import Record, latest, parts

THUMBNAIL_SIZE = 200
THUMBNAILS = ".thumbnails"  # hidden: a class folder named "thumbnails" cannot collide
PAGE_SIZE = 100


@dataclass
class ReportSummary:
    path: str
    items: int
    errors: int
    thumbnails_made: int


def _records(out_dir: str, storage: Storage) -> list[Record]:
    """The latest records of each input over every manifest part (one per map)."""
    return [record for group in latest(out_dir, storage=storage).values()
            for record in group.in_rank_order()]


def _thumbnail(source: str | None, target: str, storage: Storage) -> bool | None:
    """Make ``target`` from ``source`` unless it is up to date; None when impossible."""
    if not source or not storage.store(source).isfile(source):
        return None
    try:
        if storage.store(target).mtime(target) >= storage.store(source).mtime(source):
            return False
    except OSError:
        pass
    try:
        with storage.store(source).open(source, "rb") as f, Image.open(f) as image:
            image.draft("RGB", (THUMBNAIL_SIZE * 2, THUMBNAIL_SIZE * 2))
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            from io import BytesIO

            buffer = BytesIO()
            image.save(buffer, "JPEG", quality=80)
        storage.store(target).write_atomic(target, buffer.getvalue())
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _link(path: str | None, out_dir: str) -> str | None:
    """A relative URL from index.html to ``path`` (forward slashes, percent-safe)."""
    if not path:
        return None
    relative = locations.relative(path, out_dir)
    from urllib.parse import quote

    return quote(relative.replace(os.sep, "/"))


def build_report(out_dir: str, workers: int = 2, storage: Storage | None = None
                 ) -> ReportSummary:
    """Write ``out_dir/index.html`` (and missing thumbnails) from the run's manifests.

    Raises:
        UsageProblem: ``out_dir`` has no manifest.
    """
    storage = resolved(storage)
    if not parts(out_dir, storage):
        raise UsageProblem(f"{out_dir} has no manifest.jsonl: run camcli batch --out "
                           f"{out_dir} first")
    records = _records(out_dir, storage)
    thumbs_dir = locations.join(out_dir, THUMBNAILS)
    jobs, items = [], []
    for number, record in enumerate(records):
        output = record.path(out_dir)
        output = output if output and storage.store(output).isfile(output) else None
        stem = os.path.splitext(record.output)[0] if output else f"{number:07d}"
        overlay_thumb = locations.join(thumbs_dir, stem + ".overlay.jpg")
        original_thumb = locations.join(thumbs_dir, stem + ".original.jpg")
        jobs.append((output, overlay_thumb))
        jobs.append((record.input if record.error is None else None, original_thumb))
        top = (record.top or [[None, None, None]])[0]
        items.append({
            "input": record.input,
            "output": _link(output, out_dir),
            "overlay": _link(overlay_thumb, out_dir) if output else None,
            "original": _link(original_thumb, out_dir),
            "label": record.label,
            "score": record.score,
            "class_index": record.class_index,
            "predicted": top[1],
            "predicted_score": top[2],
            "method": record.request.method,
            "rank": record.rank,
            "box": record.box,
            "metrics": record.metrics,
            "error": record.error,
        })
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        made = list(pool.map(lambda job: _thumbnail(*job, storage), jobs))
    for item, original_made in zip(items, made[1::2], strict=True):
        if original_made is None:
            item["original"] = None
    path = locations.join(out_dir, "index.html")
    storage.store(path).write_atomic(
        path, render_html(items, locations.basename(locations.absolute(out_dir)),
                          read_audit(out_dir, storage)).encode("utf-8"))
    errors = sum(1 for item in items if item["error"])
    return ReportSummary(path, len(items), errors, sum(1 for m in made if m))


def render_html(items: list[dict], title: str, audit: dict | None = None) -> str:
    """The page (``camcli/data/report.html``: inline CSS and JavaScript), the records and
    the audit (or null) embedded as JSON."""
    def embedded(value) -> str:
        return json.dumps(value, ensure_ascii=False).replace("</", "<\\/")

    page = resources.files("camcli").joinpath("data/report.html").read_text(encoding="utf-8")
    values = {"TITLE": html.escape(f"camcli report: {title}"), "PAGE_SIZE": str(PAGE_SIZE),
              "AUDIT": embedded(audit), "DATA": embedded(items),
              "AUDIT_TABLE": _audit_table(audit)}
    # one pass, so a path in the data that reads like a placeholder stays as it is
    return re.sub(r"__(TITLE|PAGE_SIZE|AUDIT_TABLE|AUDIT|DATA)__",
                  lambda m: values[m.group(1)], page)


def _audit_table(audit: dict | None) -> str:
    """The audit's table (`camcli.analysis.audit.rows`, as ``camcli audit`` prints it) in plain
    HTML, readable without the page's script (which draws the plots above it)."""
    if not audit:
        return ""
    def row(cells, tag="td") -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"

    return ("<details id=\"audit-table\"><summary>the audit as a table</summary><table>"
            + row(COLUMNS, "th") + "".join(row(r) for r in rows(audit.get("classes", [])))
            + "</table></details>")
