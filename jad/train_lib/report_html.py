"""The evaluation report: one self-contained HTML file per workdir (``<workdir>/report.html``).

Reads what ``jad.train`` / ``jad.evaluate`` wrote (``results.json``, ``eval_results.json`` when
it is newer, and each category's ``report_data.npz``); runs no model and computes no metric:
tables show the recorded numbers, plots show the curves ``jad.metrics`` returned with them. Images
and plots are inline (base64 PNG / JPEG), styles inline, no script and no network.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jad.metrics.evaluate import _HEADERS, KEYS, MEAN
from jad.train_lib import plots, report_data
from jad.utils.atomic import write_text
from jad.utils.errors import UserError

FILE = "report.html"
CALIBRATED_KEYS = (
    "image_f1",
    "image_precision",
    "image_recall",
    "image_false_alarm_rate",
    "pixel_f1",
)
PANEL_COLUMNS = "image | heat map | overlay | ground truth | predicted mask"

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;
max-width:1500px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left}
.warn{background:#fde2e1;border:2px solid #c0392b;color:#8e1b10;padding:10px 14px;
font-weight:bold;margin:12px 0}
.note{color:#555;font-size:12px}
.plots img{margin:4px 8px 4px 0;border:1px solid #eee}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #ddd;padding:4px;background:#fafafa}
figure.bad{border:2px solid #c0392b} figure.ok{border:2px solid #3b8b3b}
figcaption{font-size:12px;max-width:660px;word-break:break-all}
.dec-bad{color:#c0392b;font-weight:bold} .dec-ok{color:#3b8b3b;font-weight:bold}
details pre{font-size:11px;background:#f6f6f6;padding:8px;max-height:400px;overflow:auto}
nav a{margin-right:12px}
"""


def _img(data: bytes, mime: str, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}"{w} src="data:{mime};base64,{b64}">'


def jpeg(array: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100.0 * float(v):.2f}"


def _cell(key: str, v: Any) -> str:
    data = "" if v is None else f' data-value="{float(v)!r}"'
    return f'<td data-key="{key}"{data}>{_pct(v)}</td>'


def metrics_table(rows: dict[str, dict[str, Any]], keys: tuple[str, ...], table_id: str) -> str:
    """Rows per category + mean, values in %; each cell carries the exact fraction."""
    keys = tuple(k for k in keys if any(r.get(k) is not None for r in rows.values()))
    head = "".join(f"<th>{_HEADERS.get(k, k)}</th>" for k in keys)
    body = []
    for name, row in rows.items():
        style = ' style="font-weight:bold"' if name == MEAN else ""
        cells = "".join(_cell(k, row.get(k)) for k in keys)
        body.append(
            f'<tr data-row="{html.escape(name)}"{style}><td class="l">{name}</td>{cells}</tr>'
        )
    return (
        f'<table id="{table_id}"><tr><th class="l">category</th>{head}</tr>{"".join(body)}</table>'
    )


def _kv_table(items: list[tuple[str, Any]]) -> str:
    rows = "".join(
        f'<tr><th class="l">{html.escape(k)}</th><td class="l">{html.escape(str(v))}</td></tr>'
        for k, v in items
    )
    return f"<table>{rows}</table>"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def load_results(workdir: Path) -> tuple[dict[str, Any], str]:
    """``results.json`` with its metrics replaced by ``eval_results.json``'s when that one is
    newer (``jad.evaluate`` re-scored the workdir); returns (results, which file the numbers are
    from)."""
    path = workdir / "results.json"
    if not path.is_file():
        raise UserError(
            f"no results.json in {workdir}: run python -m jad.train --workdir={workdir} first"
        )
    results = _read_json(path)
    source = "results.json"
    ev = workdir / "eval_results.json"
    if ev.is_file() and ev.stat().st_mtime > path.stat().st_mtime:
        e = _read_json(ev)
        results["metrics"] = e["metrics"]
        if "calibrated" in e:
            results["calibrated"] = e["calibrated"]
        source = "eval_results.json (jad.evaluate, newer than results.json)"
    return results, source


def _run_section(results: dict[str, Any], source: str, workdir: Path) -> str:
    bb = results.get("backbone", {})
    cfg = results.get("config", {})
    run = results.get("run", {})
    details = results.get("details", {})
    out = []
    if bb.get("random"):
        out.append(
            '<div class="warn" id="random-weights">RANDOM BACKBONE WEIGHTS '
            "(backbone.weights=random): these numbers only show that the pipeline runs; they "
            "are not comparable with published results.</div>"
        )
    split = []
    for cat, d in details.items():
        n, n_bad = d.get("num_test_images"), d.get("num_anomalous")
        s = f"{cat}: {n} test images ({n - n_bad} good, {n_bad} defective)" if n else cat
        cal = d.get("calibration")
        if cal:
            s += f", {cal['holdout_images']} held-out normal training images for the thresholds"
        if d.get("labelled_anomalies"):
            s += f", {d['labelled_anomalies']['n']} labelled anomalies moved to training"
        split.append(s)
    protocol = results.get("protocol")
    if isinstance(protocol, dict):
        protocol = "; ".join(f"{c}: {p}" for c, p in protocol.items())
    data = cfg.get("data", {})
    summary = {
        "resize/crop": f"{data.get('resize')}/{data.get('crop')}",
        "seed": cfg.get("seed"),
        **{
            f"{results.get('method')}.{k}": v
            for k, v in cfg.get(results.get("method", ""), {}).items()
            if not isinstance(v, dict)
        },
    }
    if "train" in cfg and results.get("method") != "patchcore":
        summary.update(
            {f"train.{k}": cfg["train"].get(k) for k in ("epochs", "batch_size", "select")}
        )
    weights = (
        f"{bb.get('source')} (arch {bb.get('arch')}, sha256 {str(bb.get('sha256'))[:12]}, "
        f"{bb.get('weights_guess', 'unknown weights')})"
        if not bb.get("random")
        else f"RANDOM initialisation (arch {bb.get('arch')})"
    )
    out.append(
        _kv_table(
            [
                ("method", results.get("method")),
                ("protocol", protocol),
                ("dataset", f"{results.get('dataset')} at {results.get('data_root')}"),
                ("split", "; ".join(split)),
                ("backbone weights", weights),
                ("config", ", ".join(f"{k}={v}" for k, v in summary.items())),
                ("jad / jax", f"{run.get('jad_version')} / {run.get('jax_version')}"),
                ("devices", f"{run.get('devices')} x {run.get('backend')}"),
                ("numbers from", f"{workdir.name}/{source}"),
                (
                    "report written",
                    datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                ),
            ]
        )
    )
    out.append(
        "<details><summary>full config</summary><pre>"
        + html.escape(json.dumps(cfg, indent=1, sort_keys=True))
        + "</pre></details>"
    )
    return "\n".join(out)


def _published_section(results: dict[str, Any]) -> str:
    """jad beside the published numbers the reproduction scripts know (``published``)."""
    from jad.train_lib import published

    comp, sentence = published.comparison(results)
    out = [f'<h3>published numbers</h3><p class="note" id="published-note">{html.escape(sentence)}']
    if comp is None:
        return "\n".join(out) + "</p>"
    if comp["warning"]:
        out.append(" Random backbone weights: no difference below is comparable.")
    if comp["no_published_number"]:
        out.append(f" No published number: {html.escape(comp['no_published_number'])}.")
    out.append("</p>")
    for ref in comp["comparisons"]:
        head = "".join(
            f"<th>{html.escape(ref['labels'][m])} jad</th><th>published</th><th>&Delta;</th>"
            for m in ref["metrics"]
        )
        rows = []
        for row, cells in ref["rows"].items():
            tds = []
            for m in ref["metrics"]:
                c = cells[m]
                jad = "-" if c["jad"] is None else f"{c['jad']:.2f}"
                pub = c["published"] if c["published"] is not None else "n/p"
                if c["published"] is None:
                    delta = "&ndash;"
                else:
                    delta = "n/c" if c["delta"] is None else f"{c['delta']:+.2f}"
                title = html.escape(c["status"])
                tds.append(f'<td>{jad}</td><td>{pub}</td><td title="{title}">{delta}</td>')
            rows.append(f'<tr><td class="l">{html.escape(row)}</td>{"".join(tds)}</tr>')
        label = ref["labels"]
        notes = [f"{label[m]}: not comparable, {why}." for m, why in ref["not_comparable"].items()]
        notes += [f"{label[m]}: {why}." for m, why in ref["notes"].items()]
        out.append(
            f'<p class="note"><b>vs {html.escape(ref["source"])}</b>. '
            f"{html.escape(ref['protocol'])} {html.escape(' '.join(notes))}</p>"
            f'<table class="published"><tr><th class="l">category</th>{head}</tr>'
            f"{''.join(rows)}</table>"
        )
    out.append(
        '<p class="note">n/p = no published number; n/c = not comparable or not computed '
        "(hover for the reason); &Delta; = jad - published, in points.</p>"
    )
    return "\n".join(out)


def _decision(label: int, score: float, thr: float | None) -> tuple[str, str]:
    """(text, css class) of an image's decision at the threshold (``defective`` iff > thr)."""
    if thr is None:
        return "no calibrated threshold", ""
    flagged = score > thr
    if flagged and label:
        return "defective (caught)", "ok"
    if flagged:
        return "FALSE ALARM (flagged, is good)", "bad"
    if label:
        return "MISS (passed, is defective)", "bad"
    return "good (passed)", "ok"


def _gallery(title: str, idx: np.ndarray, data: dict, cal: dict | None, note: str) -> str:
    from jad.metrics import normalise

    if idx.size == 0:
        return ""
    thr = None if cal is None else cal["image_threshold"]
    cards = []
    for j in idx:
        j = int(j)
        score, label = float(data["scores"][j]), int(data["labels"][j])
        text, cls = _decision(label, score, thr)
        norm = ""
        if cal is not None:
            norm = f"normalised {float(normalise(np.asarray([score]), cal['image_norm'])[0]):.3f}, "
        path = Path(data["paths"][j])
        name = f"{path.parent.name}/{path.name}"
        cards.append(
            f'<figure class="{cls}">{_img(jpeg(data["panels"][j]), "image/jpeg", name)}'
            f'<figcaption><span class="dec-{cls or "ok"}">{text}</span> &middot; raw score '
            f"{score:.5g}, {norm}truth: {'defective' if label else 'good'} &middot; "
            f"{html.escape(name)}</figcaption></figure>"
        )
    return f'<h3>{title}</h3><p class="note">{note}</p><div class="gallery">{"".join(cards)}</div>'


def _confusion(labels: np.ndarray, scores: np.ndarray, thr: float) -> str:
    pred = scores > thr
    y = labels != 0
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    return (
        '<table class="confusion"><tr><th class="l">truth \\ decision</th><th>flagged defective'
        f'</th><th>passed as good</th></tr><tr><th class="l">defective</th><td data-cm="tp">{tp}'
        f'</td><td data-cm="fn">{fn}</td></tr><tr><th class="l">good</th><td data-cm="fp">{fp}'
        f'</td><td data-cm="tn">{tn}</td></tr></table>'
    )


def _category_section(
    cat: str, results: dict[str, Any], data: dict[str, Any] | None, workdir: Path
) -> str:
    d = results.get("details", {}).get(cat, {})
    m = results["metrics"].get(cat, {})
    out = [f'<h2 id="cat-{html.escape(cat)}">{html.escape(cat)}</h2>']
    if data is None:
        return "\n".join(
            out
            + [
                f'<p class="warn">No report data for {html.escape(cat)} '
                f"({cat}/{report_data.FILE} is missing: the workdir was written before jad "
                f"saved it). Run python -m jad.evaluate --workdir={html.escape(str(workdir))} "
                "to write it.</p>"
            ]
        )
    cal = d.get("calibration")
    labels, scores = data["labels"], data["scores"]
    c = data["curves"]
    thresholds = []
    if cal is not None:
        thresholds.append((cal["image_threshold"], "decision threshold"))
        if cal["image_threshold_fpr"] != cal["image_threshold"]:
            thresholds.append((cal["image_threshold_fpr"], "false-alarm threshold"))
    figs = [
        _img(
            plots.score_histogram(
                scores[labels == 0], scores[labels != 0], thresholds, "image scores (test set)"
            ),
            "image/png",
            f"{cat} score histogram",
        )
    ]
    roc = [(c["image_roc_fpr"], c["image_roc_tpr"], f"image, AUROC {_pct(m.get('image_auroc'))}")]
    pr = [(c["image_pr_recall"], c["image_pr_precision"], f"image, AP {_pct(m.get('image_ap'))}")]
    if "pixel_roc_fpr" in c:
        roc.append(
            (c["pixel_roc_fpr"], c["pixel_roc_tpr"], f"pixel, AUROC {_pct(m.get('pixel_auroc'))}")
        )
        pr.append(
            (c["pixel_pr_recall"], c["pixel_pr_precision"], f"pixel, AP {_pct(m.get('pixel_ap'))}")
        )
    figs.append(
        _img(
            plots.curves(
                roc,
                title="ROC",
                xlabel="false-positive rate",
                ylabel="true-positive rate",
                diagonal=True,
            ),
            "image/png",
            f"{cat} ROC",
        )
    )
    figs.append(
        _img(
            plots.curves(pr, title="precision-recall", xlabel="recall", ylabel="precision"),
            "image/png",
            f"{cat} PR",
        )
    )
    if "pro_fpr" in c:
        limit = float(c["pro_fpr"][-1])
        figs.append(
            _img(
                plots.curves(
                    [
                        (
                            c["pro_fpr"],
                            c["pro_pro"],
                            f"AU-PRO {_pct(m.get('aupro'))} (to FPR {limit:g})",
                        )
                    ],
                    title=f"PRO up to the integration limit {limit:g}",
                    xlabel="false-positive rate (OK pixels)",
                    ylabel="per-region overlap",
                    xlim=(0.0, limit),
                ),
                "image/png",
                f"{cat} PRO",
            )
        )
    what = "image-score histogram of the test set (good vs defective"
    what += ", calibrated threshold drawn)" if thresholds else ")"
    what += "; ROC and precision-recall curves, image" + (
        " and pixel" if "pixel_roc_fpr" in c else ""
    )
    if "pro_fpr" in c:
        what += f"; PRO up to the integration limit FPR {float(c['pro_fpr'][-1]):g}"
    out.append(
        f'<p class="note">{what}. The curves are the ones jad.metrics integrated for the table '
        "(pixel curves thinned to 1000 points for drawing).</p>"
    )
    out.append(f'<div class="plots">{"".join(figs)}</div>')
    if cal is not None:
        out.append(
            f'<h3>decisions at the calibrated threshold</h3><p class="note">threshold '
            f"{cal['image_threshold']:.6g}: {html.escape(cal['image_threshold_rule'])}; "
            "an image is flagged defective iff its raw score is above it.</p>"
            + _confusion(labels, scores, cal["image_threshold"])
        )
    g = data["gallery"]
    cols = f"Each panel: {PANEL_COLUMNS} ({report_data.THUMB} px tiles; predicted mask = map above the calibrated pixel threshold)."
    out.append(
        _gallery(
            "highest-scoring good images (false alarms first)", g["good_highest"], data, cal, cols
        )
    )
    out.append(
        _gallery(
            "lowest-scoring defective images (misses first)", g["defective_lowest"], data, cal, cols
        )
    )
    clear = np.concatenate([g["defective_highest"], g["good_lowest"]])
    out.append(
        _gallery(
            "clearest cases (highest-scoring defective, lowest-scoring good)",
            clear,
            data,
            cal,
            cols,
        )
    )
    if d.get("history"):
        out.append(_training(cat, d, results))
    return "\n".join(out)


def _training(cat: str, d: dict[str, Any], results: dict[str, Any]) -> str:
    hist = d["history"]
    steps = np.asarray([h["step"] for h in hist], np.float64)
    keys = [k for k in hist[0] if k not in ("epoch", "step")]
    losses = [k for k in keys if not k.startswith("lr/")]
    rates = [k for k in keys if k.startswith("lr/")]
    sel = d.get("selected_step")
    sel_label = f"selected step {sel}"
    protocol = d.get("protocol", "")

    def line(k):
        return steps, np.asarray([h.get(k, np.nan) for h in hist], np.float64), k

    figs = [
        _img(
            plots.series(
                [line(k) for k in losses],
                title="training losses (epoch means)",
                ylabel="value",
                marker_x=sel,
                marker_label=sel_label,
                log_y=True,
            ),
            "image/png",
            f"{cat} losses",
        )
    ]
    if rates:
        figs.append(
            _img(
                plots.series(
                    [line(k) for k in rates],
                    title="learning rates",
                    ylabel="lr",
                    marker_x=sel,
                    marker_label=sel_label,
                ),
                "image/png",
                f"{cat} learning rates",
            )
        )
    ev = d.get("evaluations") or []
    ev_lines = []
    for key in ("val_loss", "criterion"):
        pts = [(e["step"], e[key]) for e in ev if e.get(key) is not None]
        if pts:
            ev_lines.append((np.asarray([p[0] for p in pts]), np.asarray([p[1] for p in pts]), key))
    if ev_lines:
        figs.append(
            _img(
                plots.series(
                    ev_lines,
                    title="evaluations during training",
                    ylabel="criterion",
                    marker_x=sel,
                    marker_label=sel_label,
                ),
                "image/png",
                f"{cat} evaluations",
            )
        )
    return (
        f'<h3>training</h3><p class="note">training losses (epoch means)'
        f"{', learning rates' if rates else ''}"
        f"{', evaluations during training' if ev_lines else ''} over {d.get('steps')} steps, "
        f"the {sel_label} marked; protocol: "
        f'<b>{html.escape(protocol)}</b></p><div class="plots">{"".join(figs)}</div>'
    )


def build(workdir: Path) -> Path:
    """Write ``<workdir>/report.html`` from the workdir's results; returns its path."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise UserError(f"workdir {workdir} does not exist (train first with python -m jad.train)")
    results, source = load_results(workdir)
    cats = [c for c in results["metrics"] if c != MEAN]
    datas = {}
    for cat in cats:
        p = workdir / cat / report_data.FILE
        datas[cat] = report_data.load(p) if p.is_file() else None
    title = f"jad report: {results.get('method')} on {results.get('dataset')}"
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>"
        + "".join(f'<a href="#cat-{html.escape(c)}">{html.escape(c)}</a>' for c in cats)
        + "</nav>",
        "<h2>run</h2>",
        _run_section(results, source, workdir),
        "<h2>metrics</h2>",
        '<p class="note">Threshold-free metrics in %, per category and their unweighted mean '
        "(jad.metrics: exact; AU-PRO to FPR "
        f"{results.get('config', {}).get('eval', {}).get('aupro_limit', 0.3)}).</p>",
        metrics_table(results["metrics"], KEYS, "metrics"),
        _published_section(results),
    ]
    if "calibrated" in results:
        parts += [
            "<h3>decisions at the calibrated thresholds</h3>",
            f'<p class="note">{html.escape(results["calibrated"]["protocol"])}. I-FAR = false-alarm '
            "rate on the good test images.</p>",
            metrics_table(results["calibrated"]["metrics"], CALIBRATED_KEYS, "calibrated"),
        ]
    for cat in cats:
        parts.append(_category_section(cat, results, datas[cat], workdir))
    parts.append("</body></html>")
    return write_text(workdir / FILE, "\n".join(parts))


def predictions_page(out_dir: Path, payload: dict[str, Any]) -> Path:
    """``<out_dir>/predictions.html``: ``predictions.json``'s records sorted by score (highest
    first), each with its panel (JPEG thumbnail of the PNG ``jad.predict`` wrote) and decision."""
    records = sorted(payload["predictions"], key=lambda r: -r["image_score"])
    n_bad = sum(r.get("decision") == "defective" for r in records)
    cards = []
    for r in records:
        img = Image.open(r["heatmap"]).convert("RGB")
        h = min(img.height, report_data.THUMB + 16)
        img = img.resize((round(img.width * h / img.height), h), Image.BILINEAR)
        decision = r.get("decision")
        cls = "bad" if decision == "defective" else ("ok" if decision else "")
        norm = f", normalised {r['normalised_score']:.3f}" if "normalised_score" in r else ""
        cards.append(
            f'<figure class="{cls}">{_img(jpeg(np.asarray(img)), "image/jpeg", r["path"])}'
            f'<figcaption><span class="dec-{cls or "ok"}">{(decision or "no decision").upper()}'
            f"</span> &middot; raw score {r['image_score']:.5g}{norm} &middot; "
            f"{html.escape(r['path'])}</figcaption></figure>"
        )
    title = f"jad predictions: {payload['category']} ({len(records)} images)"
    body = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="note">model: {html.escape(payload["workdir"])}; decision rule: '
        f"{html.escape(payload['decision_rule'])}; {n_bad} of {len(records)} flagged defective. "
        "Sorted by raw score, highest first.</p>"
        f'<div class="gallery">{"".join(cards)}</div></body></html>'
    )
    return write_text(Path(out_dir) / "predictions.html", body)
