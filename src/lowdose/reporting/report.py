"""``report.html``: one self-contained page (figures inlined as base64 PNG) from a study's results.

Sections: the verdict table (accuracy with 95% CI, PSNR/SSIM per dose, method and denoiser),
dose-vs-accuracy curves per method (one line per denoiser), dose-vs-PSNR/SSIM, confusion
matrices, an image grid of the same test slices at full dose, low dose and after each
restoration (in a stated display window), the data audit, unreadable files, and provenance
(config, versions, seeds, timings).

Example:
    >>> html = figure_html(None, "empty")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lowdose.io.atomic import atomic_write_text

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1280px;color:#1d2330;line-height:1.45;padding:0 16px}
h1{font-size:26px;margin-bottom:4px} h2{font-size:20px;border-bottom:2px solid #d9dee7;
padding-bottom:4px;margin-top:32px} h3{font-size:16px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:14px;margin:8px 0}
th,td{border:1px solid #cfd6e0;padding:4px 9px;text-align:right}
th{background:#eef2f7;text-align:center} td.l{text-align:left} td.acc{white-space:nowrap}
tr.best td{background:#e7f6ea;font-weight:600} tr.ref td{background:#f3f3f3}
.note{color:#4a5568;font-size:14px} .warn{color:#9b2c2c;font-weight:600}
img.fig{max-width:100%;border:1px solid #e2e8f0;margin:6px 0}
code{background:#f4f6f9;padding:1px 4px;border-radius:3px}
details{margin:8px 0} pre{font-size:12px;background:#f7f9fb;padding:8px;overflow-x:auto}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure_html(fig: Any, alt: str) -> str:
    """An ``<img>`` tag holding ``fig`` as an inline PNG."""
    return f'<img class="fig" alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _acc_text(acc: dict[str, Any]) -> str:
    lo, hi = acc.get("ci95", [None, None])
    return f"{_fmt(acc.get('value'))} <span class='note'>[{_fmt(lo)}, {_fmt(hi)}]</span>"


def _paired_text(c: dict[str, Any], key: str = "paired_vs_full_dose") -> str:
    """``-lost / +gained (p)`` against a reference; a dash where there is none."""
    paired = c.get(key)
    if not paired:
        return "–"
    return (f"−{paired['lost']} / +{paired['gained']} "
            f"<span class='note'>(p {paired['p_value']:.2g})</span>")


def _paired_phrase(paired: dict[str, Any] | None) -> str:
    """``: 3 slices lost, 1 gained, McNemar p 0.62`` for a sentence; empty without a count."""
    if not paired:
        return ""
    lost = paired["lost"]
    return (f": {lost} slice{'' if lost == 1 else 's'} lost, {paired['gained']} gained, "
            f"McNemar p {paired['p_value']:.2g}")


def _palette() -> list[str]:
    """Denoiser colours: tab10 without its green (green marks the full-dose reference)."""
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10").colors
    from matplotlib.colors import to_hex

    return [to_hex(c) for i, c in enumerate(colors) if i != 2]


NO_CELLS = ("<p class='note'>No low-dose cells: this study evaluated the classifier at full "
            "dose only (no simulation method chosen).</p>")


def _curves(results: dict[str, Any]) -> str:
    if not results["methods"]:
        return NO_CELLS
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    dens = results["denoisers"]["used"]
    full = results["full_dose"]["accuracy"]
    fig, axes = plt.subplots(1, len(methods), figsize=(6.2 * len(methods), 4.4), squeeze=False,
                             sharey=True)
    colors = _palette()
    # Zoomed to the intervals (a 0-1 axis flattens differences of a few points), never
    # narrower than 0.3 so small differences do not look large.
    values = [full["ci95"][0], full["ci95"][1]] + [
        v for c in results["cells"] for v in c["accuracy"]["ci95"]]
    lo_v, hi_v = min(values), max(values)
    pad = max(0.05, (0.3 - (hi_v - lo_v)) / 2)
    ylim = (max(0.0, lo_v - pad), min(1.02, hi_v + pad))
    for ax, method in zip(axes[0], methods, strict=True):
        for i, den in enumerate(dens):
            cells = sorted((c for c in results["cells"]
                            if c["method"] == method and c["denoiser"] == den),
                           key=lambda c: c["dose"])
            if not cells:
                continue
            d = np.array([c["dose"] for c in cells])
            a = np.array([c["accuracy"]["value"] for c in cells], float)
            lo = np.array([c["accuracy"]["ci95"][0] for c in cells], float)
            hi = np.array([c["accuracy"]["ci95"][1] for c in cells], float)
            style = dict(color="black", ls="--", marker="o") if den == "none" else dict(
                color=colors[i % len(colors)], marker="o")
            label = "low dose, no restoration" if den == "none" else den
            ax.plot(d, a, label=label, lw=2, **style)
            ax.fill_between(d, lo, hi, alpha=0.12, color=style["color"])
        ax.axhline(full["value"], color="#2ca02c", lw=2.5, ls=":", label="full dose (original)")
        ax.axhspan(full["ci95"][0], full["ci95"][1], color="#2ca02c", alpha=0.08)
        ax.set_xscale("log")
        doses = sorted(results["doses"])
        ax.set_xticks(doses)
        ax.set_xticklabels([f"{x:g}" for x in doses])
        ax.minorticks_off()
        ax.set_xlabel("dose (fraction of full dose)", fontsize=12)
        ax.set_ylabel("test accuracy", fontsize=12)
        ax.set_title(f"simulation: {method}", fontsize=13)
        ax.grid(alpha=0.3)
        ax.set_ylim(*ylim)
    # Outside the axes: inside, it hid the curves where they run low.
    axes[0][-1].legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       borderaxespad=0.0)
    fig.suptitle("Classifier accuracy vs dose (shaded: bootstrap 95% CI)", fontsize=13)
    return figure_html(fig, "accuracy vs dose")


def _image_curves(results: dict[str, Any]) -> str:
    if not results["methods"]:
        return NO_CELLS
    import matplotlib.pyplot as plt

    methods = results["methods"]
    dens = results["denoisers"]["used"]
    fig, axes = plt.subplots(2, len(methods), figsize=(6.2 * len(methods), 7.0), squeeze=False)
    colors = _palette()
    for j, method in enumerate(methods):
        for row, (key, name) in enumerate((("psnr_window", "PSNR, window [-160, 240] HU (dB)"),
                                           ("ssim_window", "SSIM, window [-160, 240] HU"))):
            ax = axes[row][j]
            for i, den in enumerate(dens):
                cells = sorted((c for c in results["cells"]
                                if c["method"] == method and c["denoiser"] == den),
                               key=lambda c: c["dose"])
                if not cells:
                    continue
                values = [c["image"].get(key) for c in cells]
                ax.plot([c["dose"] for c in cells],
                        [np.nan if v is None else v for v in values],
                        marker="o", lw=2,
                        color="black" if den == "none" else colors[i % len(colors)],
                        ls="--" if den == "none" else "-",
                        label="low dose, no restoration" if den == "none" else den)
            ax.set_xscale("log")
            doses = sorted(results["doses"])
            ax.set_xticks(doses)
            ax.set_xticklabels([f"{x:g}" for x in doses])
            ax.minorticks_off()
            ax.set_xlabel("dose (fraction of full dose)")
            ax.set_ylabel(name)
            ax.set_title(f"{method}: {key.split('_')[0].upper()} vs full dose")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=9)
    fig.tight_layout()
    return figure_html(fig, "image quality vs dose")


def _confusions(results: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    classes = results["classes"]
    short = [c.replace(".carcinoma", "").replace(".cell", " cell").replace("adeno", "adeno-")
             for c in classes]
    panels: list[tuple[str, list[list[int]]]] = [
        ("full dose", results["full_dose"]["task"]["confusion_matrix"])]
    target = min(results["doses"], key=lambda d: abs(d - 0.25))
    for method in results["methods"]:
        at = [c for c in results["cells"] if c["method"] == method and c["dose"] == target]
        raw = [c for c in at if c["denoiser"] == "none"]
        rest = [c for c in at if c["denoiser"] != "none"]
        if raw:
            panels.append((f"{method}, dose {target:g}, no restoration",
                           raw[0]["task"]["confusion_matrix"]))
        if rest:
            best = max(rest, key=lambda c: c["accuracy"]["value"] or 0)
            panels.append((f"{method}, dose {target:g}, {best['denoiser']} (best)",
                           best["task"]["confusion_matrix"]))
    ncol = min(3, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 4.2 * nrow), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, cm) in zip(axes.flat, panels, strict=False):
        m = np.array(cm, float)
        rows = m.sum(1, keepdims=True)
        frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=11,
                        color="white" if frac[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(short, rotation=35, ha="right", fontsize=9)
        ax.set_yticks(range(len(classes)))
        ax.set_yticklabels(short, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=10)
    fig.suptitle("Confusion matrices (counts; colour: fraction of the true class)", fontsize=12)
    fig.tight_layout()
    return figure_html(fig, "confusion matrices")


def _png_metric_note(results: dict[str, Any]) -> str:
    """For 8-bit display images: which grey levels the soft-tissue metric window covers."""
    exported = results.get("data", {}).get("png_window_hu")
    if not exported or not _display_images(results):
        return ""
    from lowdose.image import Window
    from lowdose.metrics.image import RANGES

    lo, hi = exported
    g0, g1 = Window(lo, hi).to_unit([RANGES["window"].lo, RANGES["window"].hi]) * 255
    return ("<p class='note'>These are 8-bit display images mapped to HU through "
            f"[{lo:g}, {hi:g}] HU, not scanner HU: the <i>window</i> metrics cover grey levels "
            f"{g0:.0f}-{g1:.0f} only (the brightest soft tissue and bone of these exports); "
            "<i>full</i> covers every grey level.</p>")


def _display_images(results: dict[str, Any]) -> bool:
    """Whether the grid slices come from 8-bit display images (PNG, JPEG), not HU data."""
    paths = results.get("grid", {}).get("paths") or []
    return bool(paths) and all(Path(p).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")
                               for p in paths)


def _grid(results: dict[str, Any], grid: dict[str, np.ndarray]) -> str:
    import matplotlib.pyplot as plt

    from lowdose.image import Window

    labels = results["grid"]["labels"]
    target = min(results["doses"], key=lambda d: abs(d - 0.25))
    # The study's display window, then the soft-tissue window where the noise shows; for 8-bit
    # display images (no HU) the images as exported instead (the window their grey levels
    # were mapped through): their mapped "soft tissue" is an arbitrary grey band, mostly black.
    windows = [(results["grid"]["window"], Window.named(results["grid"]["window"]))]
    exported = results.get("data", {}).get("png_window_hu")
    if exported and _display_images(results):
        as_exported = Window(*exported)
        if (as_exported.lo, as_exported.hi) == (windows[0][1].lo, windows[0][1].hi):
            windows[0] = (f"{windows[0][0]}, as exported", as_exported)  # one grid, not two
        else:
            windows.append(("as exported (8-bit grey levels)", as_exported))
    elif results["grid"]["window"] != "abdomen":
        windows.append(("soft tissue", Window.named("abdomen")))
    out = []
    for method in results["methods"]:
        cols = [("full dose", grid.get("full-dose"))]
        for den in results["denoisers"]["used"]:
            key = f"{method}_{target:g}_{den}"
            name = f"dose {target:g}, raw" if den == "none" else f"dose {target:g}, {den}"
            cols.append((name, grid.get(key)))
        cols = [(n, g) for n, g in cols if g is not None and len(g)]
        if not cols:
            continue
        n = len(cols[0][1])
        for shown, win in windows:
            fig, axes = plt.subplots(n, len(cols), figsize=(2.3 * len(cols), 2.4 * n),
                                     squeeze=False)
            for j, (name, imgs) in enumerate(cols):
                for i in range(n):
                    ax = axes[i][j]
                    ax.imshow(imgs[i], cmap="gray", vmin=win.lo, vmax=win.hi,
                              interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if i == 0:
                        ax.set_title(name, fontsize=10)
                    if j == 0:
                        ax.set_ylabel(labels[i].replace(".", " "), fontsize=9)
            fig.suptitle(f"Simulation {method}, display window {shown} "
                         f"[{win.lo:g}, {win.hi:g}] HU", fontsize=11)
            fig.tight_layout()
            out.append(f"<h3>Simulation {html.escape(method)}, display window "
                       f"{html.escape(shown)} [{win.lo:g}, {win.hi:g}] HU, dose {target:g}</h3>")
            out.append(figure_html(fig, f"image grid {method} {shown}"))
    return "\n".join(out)


def _table(results: dict[str, Any]) -> str:
    fd = results["full_dose"]
    head = ("<tr><th>method</th><th>dose</th><th>denoiser</th><th>accuracy [95% CI]</th>"
            "<th>vs full dose: slices lost / gained (p)</th>"
            "<th>vs raw low dose: lost / gained (p)</th>"
            "<th>balanced acc.</th><th>macro-F1</th><th>AUROC</th><th>ECE</th>"
            "<th>PSNR full (dB)</th><th>PSNR window (dB)</th><th>SSIM full</th>"
            "<th>SSIM window</th><th>RMSE (HU)</th></tr>")
    rows = [head]

    def row(cls: str, method: str, dose: str, den: str, c: dict[str, Any]) -> str:
        t, im = c["task"], c.get("image", {})
        return (f"<tr class='{cls}'><td class='l'>{method}</td><td>{dose}</td>"
                f"<td class='l'>{den}</td><td class='acc'>{_acc_text(c['accuracy'])}</td>"
                f"<td>{_paired_text(c)}</td><td>{_paired_text(c, 'paired_vs_raw')}</td>"
                f"<td>{_fmt(t['balanced_accuracy']['value'])}</td>"
                f"<td>{_fmt(t['macro_f1']['value'])}</td>"
                f"<td>{_fmt(t['macro_auroc']['value'])}</td><td>{_fmt(t['ece']['value'])}</td>"
                f"<td>{_fmt(im.get('psnr_full'), 2)}</td><td>{_fmt(im.get('psnr_window'), 2)}</td>"
                f"<td>{_fmt(im.get('ssim_full'))}</td><td>{_fmt(im.get('ssim_window'))}</td>"
                f"<td>{_fmt(im.get('rmse_hu'), 1)}</td></tr>")

    rows.append(row("ref", "original", "1", "–", fd))
    for method in results["methods"]:
        for dose in sorted(results["doses"], reverse=True):
            group = [c for c in results["cells"] if c["method"] == method and c["dose"] == dose]
            best = max((c for c in group if c["denoiser"] != "none"),
                       key=lambda c: c["accuracy"]["value"] or 0, default=None)
            for c in group:
                rows.append(row("best" if c is best else "", method, f"{dose:g}",
                                "none (raw low dose)" if c["denoiser"] == "none"
                                else c["denoiser"], c))
    return "<table>" + "".join(rows) + "</table>"


def classifier_accuracies(results: dict[str, Any], cell: dict[str, Any] | None = None
                          ) -> list[float]:
    """Accuracy under each classifier of a study, its own first: at full dose, or in ``cell``.

    Example:
        >>> classifier_accuracies({"full_dose": {"accuracy": {"value": 0.9}},
        ...                        "extra_classifiers": [{"full_dose": {"accuracy": 0.8}}]})
        [0.9, 0.8]
    """
    if cell is None:
        return [results["full_dose"]["accuracy"]["value"]] + [
            e["full_dose"]["accuracy"] for e in results.get("extra_classifiers") or []]
    return [cell["accuracy"]["value"]] + [e["accuracy"] for e in cell.get("extra_classifiers", [])]


def _across_table(results: dict[str, Any]) -> str:
    """Each cell's accuracy under every classifier and its change pooled over them."""
    extra = results.get("extra_classifiers") or []
    if not extra:
        return ""
    labels = [results["classifier_label"]] + [e["label"] for e in extra]

    def pooled(test: dict[str, Any] | None) -> str:
        if not test:
            return "–"
        return (f"−{test['lost']:.1f} / +{test['gained']:.1f} <span class='note'>(p "
                f"{test['p_value']:.2g}, Holm {test.get('p_holm', float('nan')):.2g})</span>")

    head = ("<tr><th>method</th><th>dose</th><th>denoiser</th>"
            + "".join(f"<th>{html.escape(str(lab))}</th>" for lab in labels)
            + "<th>mean</th><th>vs full dose: lost / gained per classifier (p)</th>"
            "<th>vs raw low dose (p)</th></tr>")
    fd = classifier_accuracies(results)
    rows = [head, "<tr class='ref'><td class='l'>original</td><td>1</td><td class='l'>–</td>"
            + "".join(f"<td>{_fmt(a)}</td>" for a in fd)
            + f"<td>{_fmt(float(np.mean(fd)))}</td><td>–</td><td>–</td></tr>"]
    for c in results["cells"]:
        across = c.get("across_classifiers")
        if not across:
            continue
        accs = classifier_accuracies(results, c)
        rows.append(f"<tr><td class='l'>{html.escape(c['method'])}</td><td>{c['dose']:g}</td>"
                    f"<td class='l'>{html.escape(c['denoiser'])}</td>"
                    + "".join(f"<td>{_fmt(a)}</td>" for a in accs)
                    + f"<td class='acc'>{_fmt(across['accuracy_mean'])}</td>"
                    f"<td>{pooled(across['vs_full_dose'])}</td>"
                    f"<td>{pooled(across.get('vs_raw'))}</td></tr>")
    return ("<h2>Across classifiers</h2><p class='note'>The same images judged by "
            f"{len(labels)} classifiers ({html.escape(', '.join(map(str, labels)))}). Lost / "
            "gained: slices per classifier, averaged; p: an exact sign-flip test over slices "
            "of the change summed over the classifiers (the slices are the sampled units, the "
            "classifiers fixed; with one classifier it is McNemar's test); Holm: adjusted for "
            "all the cells of the column.</p><table>" + "".join(rows) + "</table>")


def _summary(results: dict[str, Any]) -> str:
    fd = results["full_dose"]["accuracy"]
    target = min(results["doses"], key=lambda d: abs(d - 0.25))
    lines = [f"<li>Full-dose test accuracy: <b>{_acc_text(fd)}</b> "
             f"(n = {results['full_dose']['task']['n']}).</li>"]
    for method in results["methods"]:
        at = [c for c in results["cells"] if c["method"] == method and c["dose"] == target]
        raw = next((c for c in at if c["denoiser"] == "none"), None)
        rest = [c for c in at if c["denoiser"] != "none"]
        if raw is None:
            continue
        text = (f"<li>{html.escape(method)}, dose {target:g}: raw low dose "
                f"<b>{_fmt(raw['accuracy']['value'])}</b> "
                f"({(raw['accuracy']['value'] - fd['value']) * 100:+.1f} points vs full dose"
                + _paired_phrase(raw.get("paired_vs_full_dose")) + ")")
        if rest:
            best = max(rest, key=lambda c: c["accuracy"]["value"] or 0)
            text += (f"; best restoration {html.escape(best['denoiser'])} "
                     f"<b>{_fmt(best['accuracy']['value'])}</b> "
                     f"({(best['accuracy']['value'] - fd['value']) * 100:+.1f} points; against "
                     "the raw low dose" + (_paired_phrase(best.get("paired_vs_raw")) or " –")
                     + ")" + _tied(best, rest, lambda c: c["accuracy"]["value"]))
        lines.append(text + ".</li>")
        lines += _pooled_summary(results, method, target)
    return "<ul>" + "".join(lines) + "</ul>"


def _pooled_summary(results: dict[str, Any], method: str, dose: float) -> list[str]:
    """One line per method: the same cells pooled over every classifier (if several)."""
    extra = results.get("extra_classifiers") or []
    at = [c for c in results["cells"] if c["method"] == method and c["dose"] == dose
          and "across_classifiers" in c]
    raw = next((c for c in at if c["denoiser"] == "none"), None)
    if not extra or raw is None:
        return []
    fd = np.mean(classifier_accuracies(results))

    def change(test: dict[str, Any]) -> str:
        return (f"{100 * test['change']:+.1f} points, p {test['p_value']:.2g} "
                f"(Holm {test.get('p_holm', float('nan')):.2g})")

    text = (f"<li>Over all {len(extra) + 1} classifiers, {html.escape(method)} dose {dose:g}: "
            f"full dose {_fmt(float(fd))} on average; raw low dose "
            f"{change(raw['across_classifiers']['vs_full_dose'])}")
    rest = [c for c in at if c["denoiser"] != "none"]
    if rest:
        best = max(rest, key=lambda c: c["across_classifiers"]["accuracy_mean"])
        text += (f"; best restoration {html.escape(best['denoiser'])} "
                 f"{_fmt(best['across_classifiers']['accuracy_mean'])}, against the raw low dose "
                 f"{change(best['across_classifiers']['vs_raw'])}"
                 + _tied(best, rest, lambda c: c["across_classifiers"]["accuracy_mean"]))
    return [text + ".</li>"]


def _tied(best: dict[str, Any], cells: list[dict[str, Any]],
          accuracy: Callable[[dict[str, Any]], float | None]) -> str:
    """``", tied with X, Y"`` naming the other restorations as accurate as ``best``, or "".

    Example:
        >>> cells = [{"denoiser": n, "a": a} for n, a in (("tv", .7), ("bm3d", .7), ("u", .6))]
        >>> _tied(cells[0], cells, lambda c: c["a"])
        ', tied with bm3d'
    """
    others = [c["denoiser"] for c in cells
              if c is not best and accuracy(c) is not None and accuracy(c) == accuracy(best)]
    return f", tied with {html.escape(', '.join(others))}" if others else ""


def _audit(results: dict[str, Any]) -> str:
    audit = results.get("audit", {})
    data = results["data"]
    classes = results["classes"]
    parts = [f"<p>Source: <code>{html.escape(str(data['source']))}</code>. "
             f"{html.escape(data['png_note'])}. Slices are cropped to the body "
             f"({'yes' if data.get('crop_body') else 'no'}), padded to a square and resized to "
             f"{data['slice_size']} px before simulation, restoration and classification.</p>"]
    per = audit.get("per_split", {})
    if per:
        rows = ["<tr><th>split</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in classes)
                + "<th>total</th></tr>"]
        for split, counts in per.items():
            rows.append(f"<tr><td class='l'>{split}</td>" + "".join(
                f"<td>{v}</td>" for v in counts) + f"<td>{sum(counts)}</td></tr>")
        parts.append("<h3>Images used per split and class</h3><table>" + "".join(rows)
                     + "</table>")
    facts = {k: v for k, v in audit.items() if k not in ("per_split", "classes")}
    if facts:
        parts.append("<h3>Audit of the data folder</h3><table>" + "".join(
            f"<tr><td class='l'>{html.escape(str(k))}</td><td class='l'>"
            f"{html.escape(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
            for k, v in facts.items()) + "</table>")
    for w in data.get("warnings", []):
        parts.append(f"<p class='warn'>warning: {html.escape(w)}</p>")
    fails = results.get("read_failures", {"count": 0, "files": []})
    parts.append(f"<h3>Images that failed to read: {fails['count']}</h3>")
    if fails["count"]:
        parts.append("<table><tr><th>file</th><th>reason</th></tr>" + "".join(
            f"<tr><td class='l'>{html.escape(f['path'])}</td><td class='l'>"
            f"{html.escape(f['reason'])}</td></tr>" for f in fails["files"]) + "</table>")
    return "\n".join(parts)


def _provenance(results: dict[str, Any]) -> str:
    clf = results.get("classifier", {})
    spec = clf.get("spec") or {}
    cfg = clf.get("config") or {}
    lines = [
        f"<p>Classifier: <b>{html.escape(str(spec.get('arch', cfg.get('arch', '?'))))}</b>, "
        f"{html.escape(str(clf.get('source', '?')))}; input "
        f"{spec.get('input_size', cfg.get('input_size', '?'))} px, "
        f"HU window {spec.get('window', cfg.get('window'))} scaled to [0, 1], intensity "
        f"{html.escape(str(spec.get('intensity', cfg.get('intensity'))))}.",
    ]
    if "best_epoch" in clf:
        monitor = str(clf.get("monitor", "validation score"))
        if not monitor.startswith("valid"):
            monitor = f"validation {monitor}"
        lines.append(f" Selected epoch {clf['best_epoch']} of {clf.get('epochs_run')} by "
                     f"{monitor.replace('_', ' ')} {_fmt(clf.get('best_score'))}.")
    lines.append("</p>")
    notes = [clf.get("preparation_note")] + [
        e.get("classifier", {}).get("preparation_note")
        for e in results.get("extra_classifiers") or []]
    lines.extend(f"<p class='warn'>warning: {html.escape(n)}</p>" for n in notes if n)
    sim = results.get("simulator_options", {})
    if sim:
        lines.append("<p>Simulation options: " + "; ".join(
            f"<b>{html.escape(m)}</b>: {html.escape(json.dumps(o))}" for m, o in sim.items())
            + f" (pixel size = field of view {results['config'].get('fov_mm', 350):g} mm / "
            f"{results['data']['slice_size']} px"
            + ("; PNGs store no spacing, so this field of view is an assumption"
               if results["data"]["source"] != "phantom" else "") + ").</p>")
    notes = results["denoisers"].get("pixel_size_notes", {})
    if notes:
        lines.append("<p>Denoisers used outside their training scale: " + "; ".join(
            f"<b>{html.escape(n)}</b>: {html.escape(note)}" for n, note in notes.items())
            + ".</p>")
    skipped = results["denoisers"].get("skipped", [])
    if skipped:
        lines.append("<p>Denoisers skipped (could not load): " + "; ".join(
            f"<b>{html.escape(s['name'])}</b>: {html.escape(s['reason'])}" for s in skipped)
            + "</p>")
    lines.append("<p class='note'>Image metrics vs the full-dose slice: "
                 + html.escape("; ".join(f"{k}: {v}" for k, v in
                                         results["image_metric_ranges"].items())) + ".</p>")
    shown = {k: results.get(k) for k in ("config", "versions", "seeds", "timings_s")}
    trained = [clf] + [e.get("classifier", {}) for e in results.get("extra_classifiers") or []]
    if all(c.get("source") == "loaded" for c in trained) and isinstance(shown["config"], dict):
        # The training preset and overrides were not used: a loaded classifier is as it was.
        shown["config"] = {k: v for k, v in shown["config"].items()
                           if k not in ("preset", "train")}
    lines.append("<details><summary>Configuration, versions, seeds, timings</summary><pre>"
                 + html.escape(json.dumps(shown, indent=1, default=str)) + "</pre></details>")
    return "".join(lines)


def render_report(results: dict[str, Any], grid: dict[str, np.ndarray]) -> str:
    """The report as one HTML string (figures inlined)."""
    import matplotlib

    matplotlib.use("Agg")
    title = "lowdose study: classification on low-dose and restored CT"
    body = [
        f"<h1>{title}</h1>",
        f"<p class='note'>Created {html.escape(results['created'])}; data: "
        f"{html.escape(str(results['data']['source']))}; methods: "
        f"{html.escape(', '.join(results['methods']))}; doses: "
        f"{html.escape(', '.join(f'{d:g}' for d in results['doses']))}.</p>",
        "<h2>Summary</h2>", _summary(results),
        "<h2>Accuracy vs dose</h2>", _curves(results),
        "<h2>Results table</h2>",
        "<p class='note'>Accuracy with bootstrap 95% CI on the test split; green row: the best "
        "restoration at that dose and method. <i>Lost / gained</i>: test slices that the "
        "classifier gets right at full dose and wrong here, and the reverse, with the exact "
        "McNemar p-value of that paired count (not corrected for the table's many cells): "
        "more sensitive than comparing two intervals, since every cell sees the same slices; "
        "<i>vs raw low dose</i>: the same count for a restoration against the unrestored "
        "image at its dose (does restoring help the classifier?). "
        "PSNR/SSIM/RMSE compare each image with its "
        "full-dose original; <i>full</i>: HU clipped to [-1024, 3072]; <i>window</i>: "
        "[-160, 240] HU; a dash for PSNR: the image equals its reference (infinite PSNR).</p>",
        _png_metric_note(results), _table(results), _across_table(results),
        "<h2>Image quality vs dose</h2>", _image_curves(results),
        "<h2>Confusion matrices</h2>", _confusions(results),
        "<h2>Same slices: full dose, low dose and each restoration</h2>", _grid(results, grid),
        "<h2>Data</h2>", _audit(results),
        "<h2>Classifier and provenance</h2>", _provenance(results),
    ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{title}</title><style>{CSS}</style></head><body>" + "\n".join(body)
            + "</body></html>")


def write_report(results: dict[str, Any], grid: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write ``report.html`` atomically and return its path."""
    return atomic_write_text(path, render_report(results, grid))
