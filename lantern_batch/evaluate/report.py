"""The evaluation report: one self-contained HTML file with embedded PNG plots.

    html = render_report(results, title="lantern_batch evaluation")

``results`` is what :func:`lantern_batch.evaluate.job.compute_results` returns. Plots are drawn
with matplotlib's Agg backend and embedded as base64 ``data:`` URIs; the page loads no external
asset (no scripts, fonts or stylesheets from the network), so it can be mailed or opened from
S3 as is. Every section renders from whatever is available and says "not available" (with the
reason) otherwise. All text from the data (explanations, ids) is HTML-escaped by Jinja2.

The first screen (``#summary``) answers the reader's questions side by side, each with its n:
the table of models (``results["models"]``: fit labels on held-out pairs against the fit policy
and the teacher), the classifier's calibration before and after temperature scaling, the
explanation valid rate, consistency and grounding, and three good and three bad explanations
next to the teacher's.
"""

from __future__ import annotations

import base64
import io as _io
import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
from jinja2 import Environment, select_autoescape

from lantern_batch.schema import FIT_LABELS

# Colours per stage/label, readable in print and for the common colour-vision deficiencies
# (Okabe-Ito palette).
STAGE_COLOURS = {"seed": "#999999", "teacher": "#E69F00", "student": "#0072B2"}
LABEL_COLOURS = {"High": "#009E73", "Medium": "#E69F00", "Low": "#D55E00"}


def _figure(width: float = 5.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return plt, fig, ax


def _png(plt, fig) -> str:
    buf = _io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_confusion(confusion: list[list[int]]) -> str:
    """Heatmap of the confusion matrix: colour = row share, text = count and row share."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    plt, fig, ax = _figure(4.6, 3.9)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=10)
    ax.set_xticks(range(len(FIT_LABELS)), FIT_LABELS)
    ax.set_yticks(range(len(FIT_LABELS)), FIT_LABELS)
    ax.set_xlabel("student (classifier)")
    ax.set_ylabel("teacher")
    ax.set_title("Student vs teacher labels")
    return _png(plt, fig)


def plot_reliability(bins: list[dict[str, Any]], ece: float | None) -> str:
    """Reliability diagram: accuracy per confidence bin vs the diagonal, with bin counts."""
    plt, fig, ax = _figure(5.0, 4.0)
    width = bins[0]["upper"] - bins[0]["lower"]
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    acc = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    ax.bar(centres, acc, width=width * 0.9, color=STAGE_COLOURS["student"], alpha=0.85, label="accuracy")
    gap = [(c, b["confidence"], b["accuracy"]) for c, b in zip(centres, bins, strict=True) if b["count"]]
    for c, conf, a in gap:
        ax.plot([c, c], [a, conf], color="#D55E00", linewidth=2)
    ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("student confidence (probability of its label)")
    ax.set_ylabel("agreement with the teacher")
    ax.set_title(f"Calibration (ECE {ece:.3f})" if ece is not None else "Calibration")
    twin = ax.twinx()
    filled = [(c, b["count"]) for c, b in zip(centres, bins, strict=True) if b["count"]]
    twin.plot([c for c, _ in filled], [n for _, n in filled], color="#555555", marker="o",
              markersize=4, linestyle="none", label="pairs per bin")
    twin.set_ylim(0, max(n for _, n in filled) * 1.15 if filled else 1)
    twin.set_ylabel("pairs per bin")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    return _png(plt, fig)


def plot_distributions(dists: dict[str, dict[str, Any] | None]) -> str | None:
    """Grouped bars: share of each fit label per stage (seed, teacher, student)."""
    stages = [s for s in ("seed", "teacher", "student") if dists.get(s) and dists[s].get("n")]
    if not stages:
        return None
    plt, fig, ax = _figure(5.4, 3.6)
    x = np.arange(len(FIT_LABELS))
    width = 0.8 / len(stages)
    for k, stage in enumerate(stages):
        shares = [dists[stage]["shares"][name] or 0.0 for name in FIT_LABELS]
        ax.bar(x + (k - (len(stages) - 1) / 2) * width, shares, width, color=STAGE_COLOURS[stage],
               label=f"{stage} (n={dists[stage]['n']:,})")
    ax.set_xticks(x, FIT_LABELS)
    ax.set_ylabel("share of pairs")
    ax.set_ylim(0, 1)
    ax.set_title("Label distribution per stage")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def plot_rates(items: list[tuple[str, float | None]], title: str, xlabel: str, limit_one: bool = True) -> str | None:
    """Horizontal bars for a few named values (rates in [0, 1] or throughputs)."""
    items = [(name, v) for name, v in items if v is not None]
    if not items:
        return None
    plt, fig, ax = _figure(5.6, 0.9 + 0.42 * len(items))
    names = [n for n, _ in items][::-1]
    values = [v for _, v in items][::-1]
    bars = ax.barh(names, values, color=STAGE_COLOURS["student"])
    for bar, v in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {_fmt(v)}", va="center", fontsize=8)
    if limit_one:
        ax.set_xlim(0, 1.15)
    else:
        ax.set_xlim(0, max(values) * 1.25 if max(values) > 0 else 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _png(plt, fig)


def _fmt(value: Any) -> str:
    """Numbers to 4 significant digits (thousands separated), None as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    return str(value)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A nested dict as (dotted key, display value) rows; lists shown as compact JSON."""
    rows: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            rows += _flatten(v, f"{prefix}{k}.")
        return rows
    if isinstance(obj, list):
        text = json.dumps(obj)
        return [(prefix[:-1], text if len(text) <= 160 else text[:157] + "...")]
    return [(prefix[:-1], _fmt(obj))]


def build_plots(results: dict[str, Any]) -> dict[str, str | None]:
    """Every plot of the report as base64 PNG (None where its data is not available)."""
    plots: dict[str, str | None] = {}
    agreement = results.get("agreement", {})
    plots["confusion"] = plot_confusion(agreement["confusion"]) if agreement.get("available") else None
    calibration = results.get("calibration", {})
    plots["calibration"] = (plot_reliability(calibration["bins"], calibration.get("ece"))
                            if calibration.get("available") else None)
    plots["distributions"] = plot_distributions(results.get("distributions", {}))
    rouge = results.get("rouge", {})
    explainer = (results.get("training") or {}).get("explainer") or {}
    rouge_items: list[tuple[str, float | None]] = []
    if rouge.get("available"):
        rouge_items += [(f"{k} (student vs teacher)", rouge.get(k)) for k in ("rouge1", "rouge2", "rougeL")]
    rouge_items += [(f"{k} (explainer metrics.json)", v) for k, v in _numbers(explainer)
                    if "rouge" in k.lower() and 0.0 <= v <= 1.0]
    plots["rouge"] = plot_rates(rouge_items, "ROUGE F-measure", "F-measure") if rouge_items else None
    expl_items: list[tuple[str, float | None]] = []
    explanations = results.get("explanations", {})
    if explanations.get("available"):
        for who in ("student", "teacher"):
            q = explanations.get(who) or {}
            if q.get("available"):
                expl_items += [(f"valid: {who}", q["valid_rate"]),
                               (f"consistency: {who}", q["consistency"]["rate"]),
                               (f"grounding errors: {who}", q["grounding"]["rate"]),
                               (f"repetition: {who}", q["repetition"]["rate"])]
    plots["explanations"] = plot_rates(expl_items, "Held-out explanations", "share of explanations")
    throughput = results.get("throughput", {})
    rate_items = [(f"{r['stage']}: {r['metric']}", r["value"]) for r in throughput.get("rows", []) if r["kind"] == "rate"]
    plots["throughput"] = (plot_rates(rate_items[:16], "Throughput per stage", "per second", limit_one=False)
                           if rate_items else None)
    return plots


QUALITY_ROWS = (
    ("valid: passes every check", None, "valid_rate", "valid", "n"),
    ("consistent: states exactly one fit label, the row's", "consistency", "rate", "consistent", "n"),
    ("grounding errors: a skill, years, level or place the profiles do not support", "grounding", "rate", "errors", "n"),
    ("repetition: looping text", "repetition", "rate", "count", "n"),
)


def quality_rows(explanations: dict[str, Any]) -> list[tuple[str, list[dict[str, Any] | None]]]:
    """(row name, [student cell, teacher cell]) of the explanation table; a cell is ``{rate,
    count, n}``, None where that side was not judged."""
    rows = []
    for name, part, rate, count, n in QUALITY_ROWS:
        cells: list[dict[str, Any] | None] = []
        for who in ("student", "teacher"):
            q = explanations.get(who) or {}
            d = (q.get(part) if part else q) if q.get("available") else None
            cells.append({"rate": d[rate], "count": d[count], "n": d[n]} if d else None)
        rows.append((name, cells))
    return rows


def _numbers(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) for every number in a nested dict."""
    if isinstance(obj, dict):
        return [item for k, v in obj.items() for item in _numbers(v, f"{prefix}{k}.")]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [(prefix[:-1], float(obj))]
    return []


TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2733; background: #f5f7fa; }
  header { background: #0b3d62; color: #fff; padding: 18px 32px; }
  header h1 { margin: 0; font-size: 22px; }
  header p { margin: 4px 0 0; opacity: .85; font-size: 13px; }
  main { padding: 16px 32px 48px; max-width: 1200px; }
  section { background: #fff; border: 1px solid #dde3ea; border-radius: 6px; padding: 14px 20px; margin: 16px 0; }
  h2 { font-size: 18px; margin: 0 0 10px; color: #0b3d62; }
  h3 { font-size: 15px; margin: 14px 0 6px; }
  .cards { display: flex; flex-wrap: wrap; gap: 12px; }
  .card { flex: 1 1 150px; background: #fff; border: 1px solid #dde3ea; border-radius: 6px; padding: 10px 14px; }
  .card .v { font-size: 24px; font-weight: 600; color: #0b3d62; }
  .card .k { font-size: 12px; color: #5a6b7d; }
  .row { display: grid; grid-template-columns: auto minmax(280px, 1fr); gap: 20px; align-items: start; }
  @media (max-width: 980px) { .row { grid-template-columns: 1fr; } }
  img.plot { max-width: 100%; border: 1px solid #eef1f5; }
  table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
  th, td { border-bottom: 1px solid #e6eaef; padding: 4px 10px; text-align: left; vertical-align: top; }
  th { background: #f0f3f7; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .na { color: #8a5a00; background: #fff6e0; border: 1px solid #f0d9a8; padding: 6px 10px; border-radius: 4px; display: inline-block; }
  .note { color: #5a6b7d; font-size: 12px; }
  .lbl { font-weight: 600; padding: 1px 6px; border-radius: 3px; color: #fff; font-size: 12px; }
  .lbl-High { background: #009E73; } .lbl-Medium { background: #b87800; } .lbl-Low { background: #D55E00; }
  table.examples td { width: 40%; } table.examples td.meta { width: 20%; }
</style>
</head>
<body>
<header>
  <h1>{{ title }}</h1>
  <p>Generated {{ generated }} &middot; teacher: {{ r.inputs.teacher or "n/a" }} &middot; scores ds: {{ r.inputs.ds or "n/a" }}
     &middot; config {{ r.config_hash or "" }}</p>
</header>
<main>

{% macro na(section) -%}
<p class="na">Not available: {{ section.reason }}</p>
{%- endmacro %}
{% macro cell(c, n, key, show) -%}
{% if c is none %}<td class="num" title="not applicable">&mdash;</td>
{% elif not c.available %}<td><span class="na">not available: {{ c.reason }}</span></td>
{% else %}<td class="num">{{ show(c[key]) }}{% if c.n != n %} <span class="note">(n={{ fmt(c.n) }})</span>{% endif %}</td>
{% endif %}
{%- endmacro %}
{% macro example_row(e, verdict) -%}
<tr><td class="meta">{{ verdict }}<br>{{ e.member_id }}<br>{{ e.job_id }}{% if e.policy_label %}<br><span class="note">policy:</span> <span class="lbl lbl-{{ e.policy_label }}">{{ e.policy_label }}</span>{% endif %}</td>
    <td><span class="lbl lbl-{{ e.student_label }}">{{ e.student_label }}</span> {{ e.student_explanation if e.student_explanation else "(no explanation)" }}
        <div class="note">{{ ("fails: " ~ e.student_reasons|join(", ")) if e.student_reasons else "passes every check" }}</div></td>
    <td><span class="lbl lbl-{{ e.teacher_label }}">{{ e.teacher_label }}</span> {{ e.teacher_explanation if e.teacher_explanation else "(no explanation)" }}
        {% if e.teacher_reasons is not none %}<div class="note">{{ ("fails: " ~ e.teacher_reasons|join(", ")) if e.teacher_reasons else "passes every check" }}</div>{% endif %}</td></tr>
{%- endmacro %}
{% macro plot(name, alt) -%}
{% if plots[name] %}<img class="plot" data-plot="{{ name }}" alt="{{ alt }}" src="data:image/png;base64,{{ plots[name] }}">{% endif %}
{%- endmacro %}

<section id="summary">
  <h2>Summary</h2>
  <h3>Fit labels on held-out pairs</h3>
  {% set mo = r.models %}{% set h = mo.heldout %}
  {% if mo.rows %}
  <table id="models">
    <tr><th>model</th><th>n</th><th>agreement with the policy</th><th>agreement with the teacher</th><th>macro-F1 vs policy</th><th>ECE vs policy</th></tr>
    {% for row in mo.rows %}
    <tr data-model="{{ row.key }}"><td>{{ row.model }}</td>
      {% if row.available %}<td class="num">{{ fmt(row.n) }}</td>
      {{ cell(row.policy, row.n, "agreement", pct) }}{{ cell(row.teacher, row.n, "agreement", pct) }}{{ cell(row.policy, row.n, "macro_f1", fmt) }}{{ cell(row.ece, row.n, "ece", fmt) }}
      {% else %}<td colspan="5"><span class="na">not available: {{ row.reason }}</span></td>{% endif %}</tr>
    {% endfor %}
  </table>
  <p class="note">The policy label is <code>lantern_batch.policy.score_pair(member, job).fit_label</code>: the fit policy the demo world is
    generated from, so its ground truth. T2 rows: the teacher export's metrics.json, measured by distill teacher-sft on its own held-out
    D_seed pairs (seed labels are the policy's; not the pairs below). Classifier (held-out D_seed): its export's metrics.json, on
    distill classifier's own held-out D_seed pairs.
    {% if h %}Teacher and classifier rows: {{ fmt(h.pairs) }} held-out pairs{% if h.sampled %} (a stable sample of {{ fmt(h.heldout_pairs) }}){% endif %}
    of the {{ fmt(h.compared_pairs) }} compared; the pairs the students trained on are left out{% if h.policy_unknown %}; {{ fmt(h.policy_unknown) }} pairs
    whose member or job row is missing have no policy label{% endif %}.{% endif %}
    {% for row in mo.rows if row.key == "explainer" and row.available %}Explainer: the one fit label its text states, on the {{ fmt(row.judged) }}
    judged held-out explanations; n counts those that state one ({{ fmt(row.no_label) }} state none, {{ fmt(row.several_labels) }} several).{% endfor %}
    ECE: top-label confidence against the policy label. (n=&hellip;) in a cell: the pairs it counts, where fewer than the row's n; &mdash;: not applicable.</p>
  {% else %}<p class="na">Not available: {{ mo.reason or "not computed" }}</p>{% endif %}
  <div class="cards">
    <div class="card"><div class="v">{{ fmt(r.agreement.pairs) if r.agreement.available else "n/a" }}</div><div class="k">pairs compared (teacher &amp; student), training pairs included: the table above holds the held-out ones</div></div>
    <div class="card"><div class="v">{{ pct(r.agreement.accuracy) if r.agreement.available else "n/a" }}</div><div class="k">student-teacher accuracy</div></div>
    <div class="card"><div class="v">{{ fmt(r.agreement.macro_f1) if r.agreement.available else "n/a" }}</div><div class="k">macro-F1</div></div>
    <div class="card"><div class="v">{{ fmt(r.calibration.ece) if r.calibration.available else "n/a" }}</div><div class="k">ECE (calibration error)</div></div>
    {% set c = mo.calibration %}
    <div class="card" id="calibration-card">{% if c.available %}<div class="v">{{ fmt(c.before) }} &rarr; {{ fmt(c.after) }}</div>
      <div class="k">classifier ECE before &rarr; after temperature calibration{% if c.temperature is not none %} (T={{ fmt(c.temperature) }}){% endif %}:
        held-out n={{ fmt(c.n) }}{% if c.against %}, against the {{ c.against }} labels{% endif %} (its metrics.json)</div>
      {% else %}<div class="v">{{ fmt(c.report_ece) if c.report_ece is defined else "&mdash;"|safe }}</div>
      <div class="k">{% if c.report_ece is defined %}ECE of the published scores vs the teacher, n={{ fmt(c.report_n) }}; {% endif %}calibration
        before / after: not available: {{ c.reason }}</div>{% endif %}</div>
  </div>
  <h3>Student explanations of held-out pairs</h3>
  {% if r.explanations.available %}{% set q = r.explanations.student %}
  <div class="cards" id="explanation-cards">
    <div class="card"><div class="v">{{ pct(q.valid_rate) }}</div><div class="k">valid (pass every check): {{ fmt(q.valid) }} of n={{ fmt(q.n) }}</div></div>
    <div class="card"><div class="v">{{ pct(q.consistency.rate) }}</div><div class="k">state exactly one label, the right one: {{ fmt(q.consistency.consistent) }} of n={{ fmt(q.consistency.n) }}</div></div>
    <div class="card"><div class="v">{{ pct(q.grounding.rate) }}</div><div class="k">with a grounding error: {{ fmt(q.grounding.errors) }} of n={{ fmt(q.grounding.n) }}</div></div>
    <div class="card"><div class="v">{{ pct(q.repetition.rate) }}</div><div class="k">repetitive: {{ fmt(q.repetition.count) }} of n={{ fmt(q.repetition.n) }}</div></div>
    <div class="card"><div class="v">{{ fmt(r.rouge.rougeL) if r.rouge.available else "n/a" }}</div><div class="k">ROUGE-L vs teacher, n={{ fmt(r.rouge.n) if r.rouge.available else 0 }}</div></div>
  </div>
  <p class="note">Judged by the explanation validator on {{ fmt(r.explanations.heldout.judged_pairs) }} held-out pairs; the five worst are
    <a href="#worst">under Explanations</a>.</p>
  {% else %}{{ na(r.explanations) }}{% endif %}
  <h3>Every explanation precompute generated (ds {{ r.inputs.ds }})</h3>
  {% if r.published.available %}{% set p = r.published %}
  <div class="cards" id="published-cards">
    <div class="card"><div class="v">{{ pct(p.published_rate) }}</div><div class="k">published: {{ fmt(p.published) }} of the {{ fmt(p.selected) }}
      selected pairs passed the validator; {{ fmt(p.withheld) }} withheld{% if p.withheld_by_reason %} ({% for k, v in p.withheld_by_reason.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}){% endif %}, {{ fmt(p.failed) }} failed</div></div>
    <div class="card"><div class="v">{{ pct(p.regenerated_rate) }}</div><div class="k">of the published needed a regeneration: {{ fmt(p.regenerated) }}
      (the first text was rejected)</div></div>
    {% if p.canary %}
    <div class="card"><div class="v">{{ pct(p.canary.valid_rate) }}</div><div class="k">quality gate: canary explanations valid, {{ fmt(p.canary.valid) }} of
      {{ fmt(p.canary.pairs) }} ({{ fmt(p.canary.valid_first_try) }} on the first try; up to {{ fmt(p.canary.regenerations) }} regenerations)</div></div>
    <div class="card"><div class="v">{{ pct(p.canary.consistency) }}</div><div class="k">quality gate: canary explanations that state the given label</div></div>
    {% endif %}
  </div>
  <p class="note">Published explanations pass every check by construction; how many were withheld or regenerated is what says how
    good the explainer is. The validator checks form, the label, the facts an explanation names and circular phrasing; it cannot
    check the reasoning between them.</p>
  {% else %}{{ na(r.published) }}{% endif %}
  <h3>Teacher outputs synthesis kept to train on</h3>
  {% if r.teacher_outputs and r.teacher_outputs.available %}
  <div class="cards" id="teacher-output-cards">
    {% for name, t in r.teacher_outputs.teachers.items() %}
    <div class="card"><div class="v">{{ pct(t.valid_rate) }}</div><div class="k">{{ name }}: valid after retries, {{ fmt(t.labelled) }} of
      n={{ fmt(t.judged) }} ({{ pct(t.valid_first_try_rate) }} on the first try){% if t.invalid_by_reason %}; rejected for
      {% for k, v in t.invalid_by_reason.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}</div></div>
    {% endfor %}
  </div>
  {% else %}{{ na(r.teacher_outputs or {"reason": "not computed"}) }}{% endif %}
  <h3>Three good and three bad explanations, next to the teacher's</h3>
  {% if r.explanations.available %}
  <table class="examples" id="summary-examples">
    <tr><th>pair</th><th>student</th><th>teacher</th></tr>
    {% for e in good %}{{ example_row(e, "good") }}
    {% else %}<tr><td colspan="3"><span class="na">not available: no judged student explanation passes every check</span></td></tr>{% endfor %}
    {% for e in worst[:3] %}{{ example_row(e, "bad") }}
    {% else %}<tr><td colspan="3" class="note">no judged student explanation fails a check</td></tr>{% endfor %}
  </table>
  <p class="note">Good: held-out explanations that pass every check of the validator (a stable choice by pair-key hash); bad: the judged ones
    that fail the most checks.</p>
  {% else %}{{ na(r.explanations) }}{% endif %}
  {% if r.inputs.notes %}
  <h3>Notes on the inputs</h3>
  <ul class="note">{% for n in r.inputs.notes %}<li>{{ n }}</li>{% endfor %}</ul>
  {% endif %}
</section>

<section id="explanations">
  <h2>Explanations</h2>
  {% if r.explanations.available %}{% set h = r.explanations.heldout %}{% set sq = r.explanations.student %}{% set tq = r.explanations.teacher %}
  <p class="note">Held-out pairs only: {{ fmt(h.heldout_pairs) }} of {{ fmt(h.shared_pairs) }} shared pairs were held out from training
    ({% for rule in h.rules %}{{ rule.student }}: {{ pct(rule.holdout_fraction) }}, salt {{ rule.split_salt }}{% if not loop.last %}; {% endif %}{% endfor %});
    the {{ fmt(h.training_pairs_excluded) }} pairs a student trained on are left out. {{ fmt(h.explained_heldout_pairs) }} held-out pairs
    carry a student explanation; {{ fmt(h.judged_pairs) }} are judged{% if h.judged_pairs < h.explained_heldout_pairs %} (a stable sample){% endif %}.
    A pair precompute selected whose explanation is missing counts as a failed (empty) explanation.</p>
  <table id="explanation-quality">
    <tr><th></th><th>student</th><th>teacher</th></tr>
    {% for name, cells in quality_rows %}
    <tr><td>{{ name }}</td>{% for c in cells %}{% if c %}<td class="num">{{ pct(c.rate) }} <span class="note">({{ fmt(c.count) }} of n={{ fmt(c.n) }})</span></td>{% else %}<td><span class="na">not available</span></td>{% endif %}{% endfor %}</tr>
    {% endfor %}
  </table>
  <h3 id="worst">Five worst student explanations (most failed checks)</h3>
  {% if worst %}
  <table class="examples">
    <tr><th>pair</th><th>student</th><th>teacher</th></tr>
    {% for e in worst %}
    <tr><td class="meta">{{ e.member_id }}<br>{{ e.job_id }}</td>
        <td><span class="lbl lbl-{{ e.student_label }}">{{ e.student_label }}</span> {{ e.student_explanation if e.student_explanation else "(no explanation)" }}
            <div class="note">fails: {{ e.student_reasons|join(", ") }}</div></td>
        <td><span class="lbl lbl-{{ e.teacher_label }}">{{ e.teacher_label }}</span> {{ e.teacher_explanation if e.teacher_explanation else "(no explanation)" }}
            {% if e.teacher_reasons is not none %}<div class="note">{{ ("fails: " ~ e.teacher_reasons|join(", ")) if e.teacher_reasons else "passes every check" }}</div>{% endif %}</td></tr>
    {% endfor %}
  </table>
  {% else %}<p class="note">Every judged student explanation passes every check.</p>{% endif %}
  <div class="row">
    <div>{{ plot("explanations", "valid rate, consistency, grounding errors and repetition of held-out explanations") }}</div>
    <div>
      <h3>Failed checks by reason</h3>
      <table id="explanation-reasons">
        <tr><th>reason</th><th>student (n={{ fmt(sq.n) }})</th><th>teacher{% if tq.available %} (n={{ fmt(tq.n) }}){% endif %}</th></tr>
        {% for reason, count in sq.by_reason.items() if count or (tq.available and tq.by_reason[reason]) %}
        <tr><td>{{ reason }}</td><td class="num">{{ fmt(count) }}</td><td class="num">{{ fmt(tq.by_reason[reason]) if tq.available else "n/a" }}</td></tr>
        {% else %}
        <tr><td colspan="3">no explanation failed a check</td></tr>
        {% endfor %}
      </table>
      <p class="note">Reasons are those of the explanation validator (lantern_batch.quality): an explanation can fail several. Consistency
        reads the labels the text states ("High fit", "rate it Medium", "weak match", a bare "High"; negated ones do not count).</p>
    </div>
  </div>
  {% else %}{{ na(r.explanations) }}{% endif %}

  <h3>ROUGE against the teacher</h3>
  {% if r.rouge.available %}
  <div class="row">
    <div>{{ plot("rouge", "ROUGE F-measure of student explanations") }}</div>
    <table>
      <tr><th></th><th>ROUGE-1</th><th>ROUGE-2</th><th>ROUGE-L</th><th>pairs</th></tr>
      <tr><td>student vs teacher (held-out pairs)</td><td class="num">{{ fmt(r.rouge.rouge1) }}</td><td class="num">{{ fmt(r.rouge.rouge2) }}</td>
          <td class="num">{{ fmt(r.rouge.rougeL) }}</td><td class="num">{{ fmt(r.rouge.n) }}</td></tr>
    </table>
  </div>
  <p class="note">F-measure, Porter stemming (rouge-score), the same function as the explainer's metrics.json. A missing or blank student
    explanation scores 0 ({{ fmt(r.rouge.blank) }} of n={{ fmt(r.rouge.n) }}); {{ fmt(r.rouge.skipped) }} pairs without a teacher explanation are
    left out.</p>
  {% else %}{{ na(r.rouge) }}{% endif %}

  <h3>Examples, side by side</h3>
  {% if examples %}
  <table class="examples">
    <tr><th>pair</th><th>teacher</th><th>student</th></tr>
    {% for e in examples %}
    <tr><td class="meta">{{ e.member_id }}<br>{{ e.job_id }}</td>
        <td><span class="lbl lbl-{{ e.teacher_label }}">{{ e.teacher_label }}</span> {{ e.teacher_explanation }}</td>
        <td><span class="lbl lbl-{{ e.student_label }}">{{ e.student_label }}</span> {{ e.student_explanation }}
            <div class="note">{{ ("fails: " ~ e.student_reasons|join(", ")) if e.student_reasons else "passes every check" }}</div></td></tr>
    {% endfor %}
  </table>
  {% else %}<p class="na">Not available: no judged pair has both a teacher and a student explanation</p>{% endif %}
</section>

<section id="agreement">
  <h2>Student vs teacher: fit labels</h2>
  {% if r.agreement.available %}
  <p class="note">{{ fmt(r.agreement.pairs) }} pairs labelled by the teacher ({{ r.inputs.teacher }}) and scored by the classifier
    {%- if r.agreement.sampled %} (a stable sample){% endif %}. They include the pairs the students were trained on; the held-out
    numbers from training are under <a href="#training">Training</a>.</p>
  <div class="row">
    <div>{{ plot("confusion", "confusion matrix of student vs teacher labels") }}</div>
    <div>
      <table>
        <tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>teacher pairs</th></tr>
        {% for name, s in r.agreement.per_class.items() %}
        <tr><td><span class="lbl lbl-{{ name }}">{{ name }}</span></td><td class="num">{{ fmt(s.precision) }}</td>
            <td class="num">{{ fmt(s.recall) }}</td><td class="num">{{ fmt(s.f1) }}</td><td class="num">{{ fmt(s.support) }}</td></tr>
        {% endfor %}
        <tr><th>all</th><th colspan="2">accuracy {{ pct(r.agreement.accuracy) }}</th><th>macro-F1 {{ fmt(r.agreement.macro_f1) }}</th><th></th></tr>
      </table>
      <p class="note">Mean total variation distance between the student's and the teacher's label probabilities:
        {{ fmt(r.agreement.mean_tvd) }}</p>
    </div>
  </div>
  {% else %}{{ na(r.agreement) }}{% endif %}
</section>

<section id="calibration">
  <h2>Calibration</h2>
  {% if r.calibration.available %}
  <div class="row">
    <div>{{ plot("calibration", "reliability curve of the student's confidence") }}</div>
    <div>
      <p class="note">Pairs binned by the classifier's probability of the label it chose; a bar below the diagonal means
        over-confidence. ECE = &Sigma; (bin pairs / pairs) &middot; |agreement &minus; confidence| = <b>{{ fmt(r.calibration.ece) }}</b>.</p>
      <table>
        <tr><th>confidence</th><th>pairs</th><th>mean confidence</th><th>agreement</th></tr>
        {% for b in r.calibration.bins if b.count %}
        <tr><td>{{ "%.2f"|format(b.lower) }}&ndash;{{ "%.2f"|format(b.upper) }}</td><td class="num">{{ fmt(b.count) }}</td>
            <td class="num">{{ fmt(b.confidence) }}</td><td class="num">{{ fmt(b.accuracy) }}</td></tr>
        {% endfor %}
      </table>
    </div>
  </div>
  {% else %}{{ na(r.calibration) }}{% endif %}
</section>

<section id="distributions">
  <h2>Label distribution per stage</h2>
  {% if plots.distributions %}
  <div class="row">
    <div>{{ plot("distributions", "label distribution per stage") }}</div>
    <table>
      <tr><th>stage</th><th>pairs</th>{% for name in labels %}<th>{{ name }}</th>{% endfor %}</tr>
      {% for stage in ["seed", "teacher", "student"] %}{% set d = r.distributions[stage] %}
      <tr><td>{{ stage }}</td>
      {% if d %}<td class="num">{{ fmt(d.n) }}</td>{% for name in labels %}<td class="num">{{ pct(d.shares[name]) }}</td>{% endfor %}
      {% else %}<td colspan="4"><span class="na">not available</span></td>{% endif %}</tr>
      {% endfor %}
    </table>
  </div>
  {% else %}<p class="na">Not available: no seed labels, teacher labels or scores were found</p>{% endif %}
</section>

<section id="throughput">
  <h2>Throughput per stage</h2>
  {% if r.throughput.available %}
  <div class="row">
    <div>{{ plot("throughput", "throughput per stage") }}</div>
    <table>
      <tr><th>stage</th><th>metric</th><th>value</th></tr>
      {% for row in r.throughput.rows %}
      <tr><td>{{ row.stage }}</td><td>{{ row.metric }}{% if row.kind == "seconds" %} (s){% endif %}</td><td class="num">{{ fmt(row.value) }}</td></tr>
      {% endfor %}
    </table>
  </div>
  {% else %}{{ na(r.throughput) }}{% endif %}
  {% if r.manifest %}
  <h3>Precompute manifest (ds {{ r.inputs.ds }})</h3>
  <table>{% for k, v in flatten(r.manifest) %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
  {% endif %}
</section>

<section id="training">
  <h2>Training</h2>
  {% for key, title in [("teacher_sft", "Teacher SFT (agreement with D_seed before / after)"), ("classifier", "Classifier (held-out split)"), ("explainer", "Explainer (held-out split, vs the base model)")] %}
  <h3>{{ title }}</h3>
  {% if r.training[key] %}
  <table>{% for k, v in flatten(r.training[key]) %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
  {% else %}<p class="na">Not available: no metrics.json for this model</p>{% endif %}
  {% endfor %}
</section>

</main>
</body>
</html>
"""


def render_report(results: dict[str, Any], title: str = "lantern_batch evaluation") -> str:
    """The report as one HTML string (plots embedded; no external assets)."""
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(TEMPLATE)
    r = _Defaulting(results)
    return template.render(
        r=r,
        title=title,
        plots=build_plots(results),
        examples=results.get("examples") or [],
        worst=results.get("worst_explanations") or [],
        good=results.get("good_explanations") or [],
        quality_rows=quality_rows(results.get("explanations") or {}),
        labels=list(FIT_LABELS),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        fmt=_fmt,
        pct=_pct,
        flatten=_flatten,
    )


class _Defaulting(dict):
    """Results with every missing section read as ``{"available": False, ...}``."""

    def __init__(self, data: dict[str, Any]):
        super().__init__(data)
        for key in ("agreement", "calibration", "rouge", "explanations", "throughput"):
            self.setdefault(key, {"available": False, "reason": "not computed"})
        self.setdefault("inputs", {"notes": []})
        self.setdefault("models", {"rows": [], "heldout": None,
                                   "calibration": {"available": False, "reason": "not computed"}})
        self.setdefault("distributions", {"seed": None, "teacher": None, "student": None})
        self.setdefault("training", {})
        self["training"] = {k: self["training"].get(k) for k in ("teacher_sft", "classifier", "explainer")}
        self.setdefault("manifest", None)
        self.setdefault("published", {"available": False, "reason": "no precompute manifest"})
        self.setdefault("config_hash", None)
