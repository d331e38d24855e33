"""The scorecard's measures of one map, or of a map against another (``camcli evaluate``,
issue 28: the sanity checks, robustness and complexity; faithfulness and localisation
are `camcli.analysis.metrics` and `camcli.analysis.score`).

Each follows its source, as Quantus 0.6 defines it, so that figures compare on the same
maps; every map is 2-D, at the model's input size:

* `sparseness`: the Gini index of the map's absolute values (Chalasani et al. 2020;
  Quantus ``Sparseness``): 0 for a flat map, towards 1 for one hot pixel.
* `complexity`: the entropy (natural log) of the map's absolute values as a
  distribution (Bhatt et al. 2020; Quantus ``Complexity``): ``ln(n)`` for a flat map.
* `spearman`: the Spearman rank correlation of two maps' absolute values (Adebayo et al.
  2018, model parameter randomisation; Quantus ``MPRT``'s similarity).
* `ssim`: the structural similarity of two maps (Wang et al. 2004) as scikit-image
  computes it: a 7x7 uniform window, sample covariances, K1 = 0.01, K2 = 0.03, the mean
  over the window centres at least 3 pixels from the edge (Quantus ``RandomLogit`` and
  ``MPRT``).
* `max_sensitivity`: the largest ``‖m − m′‖ / ‖m‖`` over a map's noisy copies (Yeh et al.
  2019; Quantus ``MaxSensitivity``, Frobenius norms).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

#: Quantus adds it to every value before the Gini index (no division by zero).
GINI_EPSILON = 1e-7
#: scikit-image's SSIM: the window, and the constants of the luminance and contrast terms.
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03


def sparseness(heatmap: np.ndarray) -> float:
    """The Gini index of ``|heatmap|``: ``Σ (2i − n − 1) a_i / (n Σ a_i)`` over the values
    sorted ascending, ``i`` from 1, each raised by `GINI_EPSILON`."""
    values = np.sort(np.abs(np.asarray(heatmap, np.float64)).ravel() + GINI_EPSILON)
    count = values.size
    ranks = np.arange(1, count + 1)
    return float(np.sum((2 * ranks - count - 1) * values) / (count * np.sum(values)))


def complexity(heatmap: np.ndarray) -> float:
    """The entropy (nats) of ``|heatmap|`` normalised to sum 1; NaN for an all-zero map
    (no distribution, as Quantus gives)."""
    values = np.abs(np.asarray(heatmap, np.float64)).ravel()
    total = values.sum()
    if total == 0:
        return float("nan")
    return float(stats.entropy(values / total))


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation of the two maps' absolute values (ties share their mean
    rank); NaN when either map is constant."""
    a = np.abs(np.asarray(first, np.float64)).ravel()
    b = np.abs(np.asarray(second, np.float64)).ravel()
    if a.min() == a.max() or b.min() == b.max():
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def ssim(first: np.ndarray, second: np.ndarray, data_range: float = 1.0) -> float:
    """The mean structural similarity of two 2-D maps of at least 7x7 (scikit-image's
    ``structural_similarity`` with its defaults and ``data_range``)."""
    x = np.asarray(first, np.float64)
    y = np.asarray(second, np.float64)
    if x.shape != y.shape or x.ndim != 2 or min(x.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim needs two 2-D maps of the same shape, at least "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW}; got {x.shape} and {y.shape}")
    window = SSIM_WINDOW
    points = window * window
    covariance = points / (points - 1)  # sample covariances, as scikit-image's default

    def mean(image):
        return ndimage.uniform_filter(image, size=window, mode="reflect")

    ux, uy = mean(x), mean(y)
    vx = covariance * (mean(x * x) - ux * ux)
    vy = covariance * (mean(y * y) - uy * uy)
    vxy = covariance * (mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    local = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (window - 1) // 2
    return float(local[pad:-pad, pad:-pad].mean())


def max_sensitivity(heatmap: np.ndarray, noisy: list[np.ndarray]) -> float:
    """``max ‖heatmap − m′‖ / ‖heatmap‖`` over the maps ``noisy`` of the noisy copies
    (Frobenius norms); NaN with no copy or an all-zero map."""
    original = np.asarray(heatmap, np.float64)
    norm = np.linalg.norm(original)
    if not noisy or norm == 0:
        return float("nan")
    return float(max(np.linalg.norm(original - np.asarray(m, np.float64)) / norm
                     for m in noisy))


# -- the maps the scorecard measures ------------------------------------------------------

def at_input_size(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A map as every measure takes it: min-max normalised to [0, 1], then resized
    (bilinear) to the model's input, as pytorch-grad-cam's ``scale_cam_image``."""
    import cv2

    values = np.asarray(heatmap, np.float32)
    values = values - values.min()
    values = values / (1e-7 + values.max())
    if values.shape == (height, width):
        return values
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)


def kept_order(original: np.ndarray, changed: np.ndarray) -> float:
    """`spearman` of a map and its counterpart from a randomised model, where a constant
    counterpart (a map gone blank) keeps none of the original's order: 0. NaN when the
    original itself is constant (nothing to keep)."""
    original = np.asarray(original)
    if original.min() == original.max():
        return float("nan")
    changed = np.abs(np.asarray(changed))
    if changed.min() == changed.max():
        return 0.0
    return spearman(original, changed)


def other_class(classes: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Quantus ``RandomLogit``'s class per image: drawn uniformly (seeded) among the
    classes other than the explained one."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, num_classes - 1, len(classes))
    return np.where(drawn >= classes, drawn + 1, drawn).astype(np.int32)


# -- the verdict --------------------------------------------------------------------------

#: A method fails the sanity check when its mean Spearman over the first half of the
#: cascade (the classifier, then the top half of the blocks) is at least this.
SANITY_THRESHOLD = 0.5

SANITY_RULE = ("a method fails the sanity check when its mean Spearman rank correlation "
               "(of absolute values) between its maps on the model and on the randomised "
               f"model, over the first half of the cascade (the classifier, then the top "
               f"half of the blocks), is {SANITY_THRESHOLD} or more")

#: The measures that rank the methods: (key, True when higher is better).
RANKED = (("road", True), ("deletion_auc", False), ("insertion_auc", True),
          ("max_sensitivity", False))
#: With --truth, also these.
RANKED_WITH_TRUTH = (("pointing", True), ("max_box_acc_v2", True))

RULE = ("among the methods that pass the sanity check (baselines aside), the best mean rank "
        "over ROAD, deletion AUC, insertion AUC and Max-Sensitivity (with --truth also the "
        "pointing game and MaxBoxAccV2); a tie goes to the faster method")


def first_half(curve: list) -> list:
    """The first half of a cascade's steps (the first one at least): ``ceil(n / 2)``."""
    return list(curve[:max(1, (len(curve) + 1) // 2)])


def sanity_passed(spearman_curve: list) -> tuple[bool | None, float | None]:
    """``(passed, mean Spearman over the first half)``; None, None without a value."""
    values = [v for v in first_half(spearman_curve) if v is not None and np.isfinite(v)]
    if not values:
        return None, None
    mean = float(np.mean(values))
    return mean < SANITY_THRESHOLD, mean


#: Values that agree to this many significant digits tie (methods that give the same maps,
#: CAM and Grad-CAM on a GAP -> Dense head, differ only by rounding).
RANK_DIGITS = 6


def ranks_of(values: list, higher_is_better: bool) -> np.ndarray:
    """1 for the best, ties (to `RANK_DIGITS` significant digits) sharing their mean rank;
    a missing value ranks last."""
    from scipy.stats import rankdata

    numbers = np.array([np.nan if v is None else float(f"{float(v):.{RANK_DIGITS}g}")
                        for v in values])
    missing = ~np.isfinite(numbers)
    keyed = -numbers if higher_is_better else numbers.copy()
    keyed[missing] = np.inf
    return rankdata(keyed, method="average")


def recommend(rows: list[dict], with_truth: bool) -> tuple[str | None, list[int]]:
    """`RULE` applied to the methods' rows (the keys of `RANKED`, ``sanity.passed``,
    ``baseline``, ``seconds_per_image``): the recommended method (None when no method
    passes) and every method's rank (the eligible ones first, by mean rank)."""
    if not rows:
        return None, []
    measures = RANKED + (RANKED_WITH_TRUTH if with_truth else ())
    table = np.stack([ranks_of([row.get(key) for row in rows], higher)
                      for key, higher in measures])
    mean_rank = table.mean(axis=0)
    eligible = [bool(row["sanity"]["passed"]) and not row.get("baseline") for row in rows]
    order = sorted(range(len(rows)), key=lambda i: (
        not eligible[i], mean_rank[i], rows[i].get("seconds_per_image") or 0.0, i))
    ranks = [0] * len(rows)
    for place, index in enumerate(order, start=1):
        ranks[index] = place
    best = order[0]
    return (rows[best]["method"] if eligible[best] else None), ranks


#: The printed table's columns: (key, heading, format, True when higher is better, or
#: None when no column is best).
COLUMNS = (("sanity", "sanity", "", None), ("random_logit", "rand.logit", ".3f", False),
           ("road", "ROAD", ".4f", True), ("deletion_auc", "del.AUC", ".4f", False),
           ("insertion_auc", "ins.AUC", ".4f", True),
           ("max_sensitivity", "max.sens", ".3f", False),
           ("sparseness", "sparse", ".3f", None), ("complexity", "complex", ".2f", None),
           ("pointing", "pointing", ".3f", True), ("max_box_acc_v2", "MaxBoxV2", ".3f", True),
           ("seconds_per_image", "s/img", ".3f", False), ("rank", "rank", "d", None))


def table(document: dict) -> str:
    """The scorecard as text: methods by rank, the best value of each column marked ``*``
    (the sanity column: pass or FAIL with the first half's mean Spearman)."""
    rows = sorted(document["methods"], key=lambda row: row["rank"])
    with_truth = any(row.get("pointing") is not None for row in rows)
    columns = [c for c in COLUMNS if with_truth or c[0] not in ("pointing", "max_box_acc_v2")]
    best = {}
    for key, _, _, higher in columns:
        if higher is None:
            continue
        values = [row.get(key) for row in rows if row.get(key) is not None
                  and not row.get("baseline")]
        values = [v for v in values if np.isfinite(v)]
        if values:
            best[key] = max(values) if higher else min(values)
    lines = []
    heading = f"{'method':<22}" + "".join(f"{title:>13}" for _, title, _, _ in columns)
    lines.append(heading)
    for row in rows:
        cells = []
        for key, _, fmt, _ in columns:
            if key == "sanity":
                sanity = row["sanity"]
                said = {True: "pass", False: "FAIL", None: "n/a"}[sanity["passed"]]
                mean = sanity.get("first_half_spearman")
                cells.append(said if mean is None else f"{said} {mean:.2f}")
                continue
            value = row.get(key)
            if value is None or (isinstance(value, float) and not np.isfinite(value)):
                cells.append("-")
                continue
            mark = "*" if (key in best and value == best[key]
                           and not row.get("baseline")) else ""
            cells.append(f"{value:{fmt}}{mark}")
        name = row["method"] + (" (baseline)" if row.get("baseline") else "")
        lines.append(f"{name:<22}" + "".join(f"{cell:>13}" for cell in cells))
    lines.append("")
    lines.append(f"recommended: {document['recommended'] or 'none (no method passes)'}")
    lines.append(f"rule: {document['rule']}")
    lines.append(f"sanity check: {document['sanity_rule']}")
    return "\n".join(lines)


# -- the report page ----------------------------------------------------------------------

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")


def _curves(document: dict, key: str, title: str) -> str:
    """An inline SVG: each method's ``sanity[key]`` over the cascade's steps."""
    from html import escape

    width, height, left, bottom = 640, 260, 40, 30
    rows = document["methods"]
    steps = rows[0]["sanity"]["steps"] if rows else []
    count = max(len(steps) - 1, 1)

    def x(i):
        return left + (width - left - 150) * i / count

    def y(v):
        return 10 + (height - bottom - 10) * (1 - (max(-1.0, min(1.0, v)) + 1) / 2)

    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="10" font-size="11">{escape(title)}</text>']
    for level in (-1, 0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{width - 150}" y1="{y(level):.1f}" '
                     f'y2="{y(level):.1f}" stroke="#ccc"/><text x="4" y="{y(level) + 4:.1f}" '
                     f'font-size="10">{level:g}</text>')
    for i, step in enumerate(steps):
        parts.append(f'<text x="{x(i):.1f}" y="{height - 4}" font-size="8" '
                     f'text-anchor="middle">{escape(step.rsplit("/", 1)[-1][:10])}</text>')
    for n, row in enumerate(rows):
        colour = _PALETTE[n % len(_PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in
                          enumerate(row["sanity"][key]) if v is not None)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{points}"/><text x="{width - 140}" y="{20 + 12 * n}" '
                     f'font-size="10" fill="{colour}">{escape(row["method"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def page(document: dict, figures: dict[str, list[bytes]]) -> str:
    """``evaluate.html``: the verdict, the table, Adebayo et al.'s figure (per method, the
    first photo's map on the model, then after each step of the cascade) and the
    curves; self-contained (the pictures inline)."""
    import base64
    from html import escape

    rows = sorted(document["methods"], key=lambda row: row["rank"])
    steps = rows[0]["sanity"]["steps"] if rows else []
    out = ["<!doctype html><meta charset='utf-8'><title>camcli evaluate</title>",
           "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{padding:3px 6px;border-bottom:1px solid #ddd;text-align:right}"
           "td:first-child,th:first-child{text-align:left}.fail{color:#b00}"
           ".fig img{display:block;width:112px}.fig td{text-align:center;font-size:10px}"
           "</style>",
           f"<h1>Which heatmap to believe on {escape(str(document['model']))}</h1>",
           f"<p>{document['images']} images; target: {escape(str(document['target']))}. "
           f"<b>Recommended: {escape(str(document['recommended'] or 'none'))}</b>.</p>",
           f"<p>Rule: {escape(document['rule'])}.<br>Sanity check: "
           f"{escape(document['sanity_rule'])}.</p>",
           "<h2>Scorecard</h2><pre>" + escape(table(document)) + "</pre>",
           "<h2>Randomisation, step by step (Adebayo et al. 2018)</h2>",
           "<table class='fig'><tr><th>method</th><th>model</th>"
           + "".join(f"<th>{escape(s.rsplit('/', 1)[-1])}</th>" for s in steps) + "</tr>"]
    for row in rows:
        passed = row["sanity"]["passed"]
        css = " class='fail'" if passed is False else ""
        cells = "".join(
            f"<td><img alt='' src='data:image/jpeg;base64,"
            f"{base64.b64encode(jpeg).decode()}'></td>"
            for jpeg in figures.get(row["method"], []))
        said = {True: "passes", False: "FAILS", None: "n/a"}[passed]
        out.append(f"<tr><td{css}>{escape(row['method'])}<br>{said}</td>{cells}</tr>")
    out.append("</table>")
    out.append(_curves(document, "spearman", "Spearman of |map| vs the original, by step"))
    out.append(_curves(document, "ssim", "SSIM vs the original, by step"))
    return "\n".join(out) + "\n"
