"""Benchmark: what the students learn from a perfect teacher on the synthetic world.

    flock /tmp/lantern-heavy.lock python bench/quality.py        # ~1.5 h on 2 cores (all parts)
    python bench/quality.py --only classifier --pairs 4000         # one part, another size
    python bench/quality.py --only teacher_sft --teacher-epochs 2  # teacher SFT, longer
    python bench/quality.py --only ood                             # an exported classifier, real-world text

The teacher is the written policy (docs/POLICY.md) itself
(:mod:`lantern_batch.distill.policy_teacher`): policy-consistent labels, soft probabilities and
explanations for every pair of a generated world. Two runs through the real jobs (Ray Data prep,
Ray Train, evaluation, export):

* **classifier** — MiniLM on a few thousand policy labels (data + logit-level KD); accuracy,
  macro-F1, ECE and the High-vs-Low ranking AUC on held-out pairs against the policy's labels.
  Claim checked: accuracy >= 0.85.
* **explainer** — every third layer of SmolLM2-135M (~63M parameters) trained on the policy's
  explanations with SFT + TVD KD against SmolLM2's stored top-k (what synthesis stores);
  ROUGE-1/2/L against the policy's explanations on held-out pairs, against the untrained pruned
  student and the unpruned SmolLM2 prompted the same way. Claim checked: the student's ROUGE-L
  beats the untrained student's clearly (by >= 0.15).
* **teacher_sft** — the in-house teacher step: SmolLM2-135M (LoRA r=16) fine-tuned on a generated
  world's policy-labelled D_seed with the compact v2 prompt, through the real ``distill
  teacher-sft`` job; label agreement (accuracy, macro-F1, confusion) with the held-out seed
  labels before and after, read the way synthesis reads a label. Claim checked: agreement rises
  by >= 0.25. ~57 min on 2 cores (1,000 examples at ~0.3 samples/s).

Writes ``bench/results/quality.json`` and ``bench/results/quality.png`` (each ``--only`` run merges
into them).

One more part measures an exported classifier rather than training one, so it runs only when asked:

* **ood** — the hand-written out-of-distribution set (``tests/data/ood``: members and postings in
  fields, places and wording the generator never writes, each member with a High, a Medium and a
  Low posting labelled by a person). The classifier (``--classifier``, default the demo's
  ``runs/demo/models/classifier``) scores every pair on ``prompts.classifier_text``, as precompute
  does; reported: how often each member's postings are ordered High > Medium > Low by
  p_high - p_low (share of the 3 pairwise comparisons per member that hold, ties count as
  failures), label accuracy and confusion against the hand labels, and the same for the written
  policy's own label and total (``policy.score_pair``), which shows how far the synthetic
  vocabulary (taxonomy titles, skills, cities) reaches on real-world text. Claim checked: the
  classifier's ordering holds for >= 85% of comparisons. ~1 min on 2 cores. Writes
  ``bench/results/quality_ood.json`` and ``bench/results/quality_ood.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
MIN_ACCURACY = 0.85
MIN_ROUGE_L_GAIN = 0.15
MIN_AGREEMENT_GAIN = 0.25
MIN_OOD_ORDERING = 0.85
DEFAULT_CLASSIFIER = ROOT / "runs" / "demo" / "models" / "classifier"
COMPARISONS = (("High", "Medium"), ("Medium", "Low"), ("High", "Low"))


def make_world(out: Path, pairs: int, **overrides) -> dict[str, str]:
    """Generate a world of ``pairs`` pairs (``overrides``: other GenerateConfig fields); its input paths."""
    from lantern_batch.world import GenerateConfig, generate

    fields = {"num_members": max(200, pairs // 8), "num_jobs": max(60, pairs // 25), "num_seed": 200, "seed": 11}
    generate(GenerateConfig(out=str(out), num_pairs=pairs, **{**fields, **overrides}))
    return {t: str(out / t) for t in ("members", "jobs", "pairs")}


def policy_labels(inputs: dict[str, str], out: Path, topk_rows: int = 0, topk_model: str | None = None,
                  member_tokens: int = 150, job_tokens: int = 150) -> Path:
    """Write the policy's teacher-label table; the first ``topk_rows`` rows also get top-k."""
    import pyarrow as pa

    from lantern_batch import io
    from lantern_batch.distill.policy_teacher import add_topk, policy_teacher_labels

    members, jobs = io.read_table(inputs["members"]), io.read_table(inputs["jobs"])
    table = policy_teacher_labels(members, jobs, io.read_table(inputs["pairs"]))
    if topk_rows:
        table = add_topk(table.slice(0, topk_rows), members, jobs, topk_model, k=20,
                         member_tokens=member_tokens, job_tokens=job_tokens)
    io.delete_dir(str(out))
    io.write_table(pa.Table.from_batches(table.to_batches(), schema=table.schema), str(out / "labels" / "teacher=policy"))
    return out


def bench_classifier(args, tmp: Path) -> dict:
    from lantern_batch.config import load_config
    from lantern_batch.distill.config import ClassifierConfig
    from lantern_batch.distill.job import run_classifier

    inputs = make_world(tmp / "world", args.pairs)
    synth = policy_labels(inputs, tmp / "synth")
    out = tmp / "classifier"
    cfg = load_config(ClassifierConfig, None, [
        f"out={out}", f"data.teacher_labels={synth}", "data.seed=null", "data.holdout_fraction=0.12",
        f"model.max_length={args.max_length}", f"model.text_max_chars={args.text_max_chars}",
        f"train.epochs={args.epochs}", "train.batch_size=32", "train.lr=1e-4",
        f"train.storage_path={tmp / 'train'}", "train.checkpoint_every_steps=1000", "train.log_every_steps=20",
    ], base={"inputs": inputs})
    start = time.perf_counter()
    assert run_classifier(cfg) == 0
    seconds = time.perf_counter() - start
    m = json.loads((out / "metrics.json").read_text())
    return {
        "pairs": args.pairs, "train_examples": m["data"]["num_train"], "heldout": m["n"],
        "epochs": args.epochs, "max_length": args.max_length, "text_max_chars": args.text_max_chars,
        "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m["ece"],
        "ece_uncalibrated": m["uncalibrated"]["ece"], "calibration_temperature": m["calibration_temperature"],
        "ranking_auc_high_vs_low": m["ranking_auc_high_vs_low"], "confusion": m["confusion"],
        "seconds": round(seconds, 1), "pass": m["accuracy"] >= MIN_ACCURACY,
    }


def bench_explainer(args, tmp: Path) -> dict:
    from lantern_batch.config import load_config
    from lantern_batch.distill.config import ExplainerConfig
    from lantern_batch.distill.job import run_explainer
    from lantern_batch.models import resolve

    inputs = make_world(tmp / "world_e", max(600, args.explainer_examples * 2))
    teacher = str(resolve("bundled:smollm2"))
    start = time.perf_counter()
    synth = policy_labels(inputs, tmp / "synth_e", topk_rows=args.explainer_examples, topk_model=teacher,
                          member_tokens=args.explainer_tokens, job_tokens=args.explainer_tokens)
    topk_seconds = time.perf_counter() - start
    out = tmp / "explainer"
    cfg = load_config(ExplainerConfig, None, [
        f"out={out}", f"data.teacher_labels={synth}", "data.holdout_fraction=0.15",
        f"prompt.member_tokens={args.explainer_tokens}", f"prompt.job_tokens={args.explainer_tokens}",
        "student.source=bundled:smollm2", "student.keep_every=3",
        "kd.divergence=tvd", "kd.lambda_kd=1.0", f"train.epochs={args.explainer_epochs}", "train.batch_size=4",
        f"train.storage_path={tmp / 'train'}", "train.log_every_steps=10",
        f"eval.num_pairs={args.eval_pairs}", "eval.max_new_tokens=96",
    ], base={"inputs": inputs})
    start = time.perf_counter()
    assert run_explainer(cfg) == 0
    seconds = time.perf_counter() - start
    m = json.loads((out / "metrics.json").read_text())
    keys = ("rouge1", "rouge2", "rougeL", "base_rouge1", "base_rouge2", "base_rougeL",
            "source_rouge1", "source_rouge2", "source_rougeL", "heldout_nll", "base_heldout_nll",
            "heldout_token_accuracy", "base_heldout_token_accuracy", "heldout_loss_pairs")
    return {
        "train_examples": m["data"]["num_train"], "eval_pairs": m["n"], "parameters": m["parameters"],
        "student_layers": m["student_layers"], "epochs": args.explainer_epochs,
        **{k: m.get(k) for k in keys}, "kd_aligned": m["data"]["counts"].get("kd_aligned"),
        "topk_seconds": round(topk_seconds, 1),
        "seconds": round(seconds, 1),
        "pass": (m["rougeL"] - m["base_rougeL"]) >= MIN_ROUGE_L_GAIN,
    }


def bench_teacher_sft(args, tmp: Path) -> dict:
    from lantern_batch.config import load_config
    from lantern_batch.distill.config import TeacherSFTConfig
    from lantern_batch.distill.job import run_teacher_sft

    # D_seed is the world's policy-labelled seed table (what `generate` writes for the demo).
    world = tmp / "world_t"
    seed_rows = args.teacher_examples + args.teacher_heldout
    inputs = make_world(world, max(3000, 3 * seed_rows), num_members=400, num_jobs=120, num_seed=seed_rows, seed=13)
    out = tmp / "teacher"
    cfg = load_config(TeacherSFTConfig, None, [
        f"out={out}", f"data.seed={world / 'seed'}",
        f"data.holdout_fraction={args.teacher_heldout / seed_rows:.4f}",
        f"prompt_version={args.teacher_prompt}",
        f"prompt.member_tokens={args.teacher_tokens}", f"prompt.job_tokens={args.teacher_tokens}",
        f"prompt.max_target_tokens={args.teacher_target_tokens}", f"prompt.max_length={args.teacher_max_length}",
        f"lora.enabled={not args.teacher_full}", "lora.r=16", "lora.alpha=32",
        f"train.epochs={args.teacher_epochs}", "train.batch_size=4", f"train.lr={args.teacher_lr}",
        f"train.label_loss_weight={args.teacher_label_weight}",
        f"train.storage_path={tmp / 'train_t'}", "train.log_every_steps=10", "train.checkpoint_every_steps=1000",
        f"eval.num_pairs={args.teacher_heldout}", "eval.batch_size=8",
    ], base={"inputs": inputs})
    start = time.perf_counter()
    assert run_teacher_sft(cfg) == 0
    seconds = time.perf_counter() - start
    m = json.loads((out / "metrics.json").read_text())
    before, after = m["label_agreement_before"], m["label_agreement_after"]
    return {
        "train_examples": m["data"]["num_train"], "heldout": m["heldout_pairs"], "prompt_version": args.teacher_prompt,
        "prompt_tokens": args.teacher_tokens, "target_tokens": args.teacher_target_tokens,
        "lora": not args.teacher_full, "epochs": args.teacher_epochs, "lr": args.teacher_lr,
        "label_loss_weight": args.teacher_label_weight,
        "train_samples_per_s": m["train"].get("samples_per_s"),
        "before": before, "after": after, "seconds": round(seconds, 1),
        "pass": after["accuracy"] - before["accuracy"] >= MIN_AGREEMENT_GAIN,
    }


def plot(results: dict, path: Path) -> None:
    """One panel per part: what the student reaches against its baseline and the claim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    c, e, t = results.get("classifier"), results.get("explainer"), results.get("teacher_sft")
    ax = axes[0]
    if c:
        ax.bar(["accuracy", "macro-F1", "AUC High/Low"], [c["accuracy"], c["macro_f1"], c["ranking_auc_high_vs_low"]],
               color="#4c72b0")
        ax.axhline(MIN_ACCURACY, color="k", ls="--", lw=1, label=f"claim {MIN_ACCURACY}")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"classifier (MiniLM), {c['heldout']} held-out pairs", fontsize=9)
    ax = axes[1]
    if e:
        names = ["untrained\nstudent", "SmolLM2-135M\n(unpruned)", "trained\nstudent"]
        ax.bar(names, [e["base_rougeL"], e["source_rougeL"], e["rougeL"]], color=["#999999", "#dd8452", "#4c72b0"])
        ax.set_ylabel("ROUGE-L vs teacher")
        ax.set_title(f"explainer ({len(e['student_layers'])} layers, {e['parameters'] / 1e6:.0f}M), "
                     f"{e['eval_pairs']} held-out pairs", fontsize=9)
    ax = axes[2]
    if t:
        x = range(2)
        for i, (when, color) in enumerate((("before", "#999999"), ("after", "#4c72b0"))):
            ax.bar([j + (i - 0.5) * 0.38 for j in x], [t[when]["accuracy"], t[when]["macro_f1"]], width=0.38,
                   color=color, label=f"{when} SFT")
        ax.set_xticks(list(x), ["agreement (accuracy)", "macro-F1"])
        ax.set_ylim(0, 1.05)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"teacher SFT, {t['train_examples']} train / {t['heldout']} held-out pairs",
                     fontsize=9)
    for ax, part in zip(axes, (c, e, t), strict=True):
        if not part:
            ax.set_axis_off()
    fig.suptitle(f"bench/quality.py on the synthetic world ({results.get('machine', '')}, {results.get('date', '')})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------
# ood: an exported classifier and the policy on the hand-written set


def host() -> str:
    """This machine in words: cores, CPU model (and native bf16), memory, GPU."""
    import os

    cpu, bf16 = platform.processor() or platform.machine(), False
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), cpu)
        bf16 = "avx512_bf16" in info
        mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal"))
        memory = f", {mem / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = ""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "no GPU"
    return f"{os.cpu_count()}-core {cpu}{' with AVX-512 BF16' if bf16 else ''}{memory}, {gpu}"


def ordering(scores: dict[tuple[str, str], float], labels: list) -> dict:
    """How often a member's postings are ordered High > Medium > Low by ``scores``.

    ``labels``: the hand labels (one High, one Medium and one Low posting per member). Each member
    gives three comparisons (High > Medium, Medium > Low, High > Low); a tie fails.
    """
    by_member: dict[str, dict[str, float]] = {}
    for h in labels:
        by_member.setdefault(h.member_id, {})[h.label] = scores[(h.member_id, h.job_id)]
    held = {f"{a}>{b}": 0 for a, b in COMPARISONS}
    fully, failures = 0, {}
    for member, s in by_member.items():
        wrong = [f"{a}>{b}" for a, b in COMPARISONS if not s[a] > s[b]]
        for a, b in COMPARISONS:
            held[f"{a}>{b}"] += s[a] > s[b]
        fully += not wrong
        if wrong:
            failures[member] = wrong
    n = len(by_member)
    total = sum(held.values())
    return {
        "share": total / (3 * n), "held": total, "comparisons": 3 * n,
        "by_comparison": {k: v / n for k, v in held.items()},
        "members_fully_ordered": fully, "members": n, "failures": failures,
    }


def score_classifier(model_dir: Path, texts: list[str]) -> tuple[list[list[float]], dict]:
    """Probabilities ``[n, 3]`` (High, Medium, Low) of an exported classifier, loaded and run as
    precompute runs it (max length, text length and calibration temperature from the export,
    bf16 where the hardware has it), and what was run."""
    from lantern_batch.classifier import (
        bf16_supported,
        classifier_version,
        load_classifier,
        predict_proba,
    )

    model, tokenizer, meta = load_classifier(model_dir)
    bf16 = bf16_supported("cpu")
    start = time.perf_counter()
    probs = predict_proba(model, tokenizer, texts, max_length=int(meta.get("max_length") or 256),
                          batch_size=32, temperature=float(meta.get("calibration_temperature") or 1.0), bf16=bf16)
    seconds = time.perf_counter() - start
    metrics_path = model_dir / "metrics.json"
    trained = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return probs.tolist(), {
        "dir": str(model_dir), "version": classifier_version(model_dir),
        "text_version": meta.get("text_version"), "max_length": meta.get("max_length"),
        "text_max_chars": meta.get("text_max_chars"),
        "calibration_temperature": meta.get("calibration_temperature"), "bf16": bf16,
        "scoring_seconds": round(seconds, 2),
        "heldout_accuracy_in_distribution": trained.get("accuracy"), "heldout_n": trained.get("n"),
    }


def vocabulary_reach(members: dict[str, dict], jobs: dict[str, dict], labels: list, policy: dict) -> dict:
    """How much of the set the synthetic world's vocabulary reads: levels, role families, places
    (taxonomy cities vs the offline gazetteer) and required skills the policy matches."""
    from lantern_batch import locations
    from lantern_batch.policy import member_family
    from lantern_batch.taxonomy import city_of, family_of_title
    from lantern_batch.titles import job_seniority, member_seniority

    def share(values) -> float:
        values = list(values)
        return sum(bool(v) for v in values) / len(values)

    m, j = list(members.values()), list(jobs.values())
    high = [h for h in labels if h.label == "High"]
    return {
        "level_read": {"members": share(member_seniority(r) for r in m), "jobs": share(job_seniority(r) for r in j)},
        "role_family_known": {"members": share(member_family(r) for r in m),
                              "jobs": share(family_of_title(r.get("title")) for r in j)},
        "location_a_taxonomy_city": {"members": share(city_of(r.get("location")) for r in m),
                                     "jobs": share(city_of(r.get("location")) for r in j)},
        "location_in_gazetteer": {"members": share(locations.resolve(r.get("location")) for r in m),
                                  "jobs": share(locations.resolve(r.get("location")) for r in j)},
        "pairs_with_a_required_skill_matched": share(policy[(h.member_id, h.job_id)]["matched"] for h in labels),
        "high_pairs_with_policy_skills_ge_3": share(
            policy[(h.member_id, h.job_id)]["dimension_scores"]["skills"] >= 3 for h in high),
    }


def plot_ood(result: dict, path: Path) -> None:
    """Each member's p_high - p_low for its three postings; confusion of the classifier and the
    policy against the hand labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from lantern_batch.schema import FIT_LABELS

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [2.4, 1, 1]})
    ax = axes[0]
    members = sorted({p["member_id"] for p in result["pairs"]})
    x = {m: i for i, m in enumerate(members)}
    for label, color, marker in (("High", "#4c72b0", "^"), ("Medium", "#dd8452", "o"), ("Low", "#c44e52", "v")):
        rows = [p for p in result["pairs"] if p["hand_label"] == label]
        ax.scatter([x[p["member_id"]] for p in rows], [p["score"] for p in rows], c=color, marker=marker,
                   s=28, label=f"hand {label}", zorder=3)
    for m in result["classifier_ordering"]["failures"]:
        ax.axvspan(x[m] - 0.4, x[m] + 0.4, color="#eeeeee", zorder=1)
    ax.set_xticks(range(len(members)), [m.replace("ood-", "") for m in members], rotation=90, fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("p_high - p_low")
    ax.set_ylim(-1.05, 1.35)
    o = result["classifier_ordering"]
    ax.set_title(f"classifier score per member (grey: order broken); High>Medium>Low holds "
                 f"{o['held']}/{o['comparisons']} = {o['share']:.0%}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    for ax, key, name in ((axes[1], "classifier_vs_hand", "classifier"), (axes[2], "policy_vs_hand", "policy")):
        cm = np.asarray(result[key]["confusion"])
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, cm.max()))
        for i in range(3):
            for j in range(3):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=9,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xticks(range(3), FIT_LABELS, fontsize=8)
        ax.set_yticks(range(3), FIT_LABELS, fontsize=8)
        ax.set_xlabel(f"{name} label", fontsize=8)
        ax.set_ylabel("hand label", fontsize=8)
        ax.set_title(f"{name} vs hand: accuracy {result[key]['accuracy']:.2f}", fontsize=9)
    fig.suptitle(f"bench/quality.py --only ood: {result['members']} hand-written members, {result['n_pairs']} pairs "
                 f"({result['machine']}, {result['date']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_ood(args) -> dict:
    """Score the hand-written set with an exported classifier and with the policy."""
    from lantern_batch.metrics import classification_report
    from lantern_batch.policy import score_pair
    from lantern_batch.precompute.classifier_stage import DEFAULT_TEXT_MAX_CHARS
    from lantern_batch.prompts import classifier_text
    from lantern_batch.schema import FIT_LABELS, conform
    from tests.data.ood import OOD_DIR, load_ood

    ood = load_ood()
    members = {r["member_id"]: r for r in conform(ood.members, "members").to_pylist()}
    jobs = {r["job_id"]: r for r in conform(ood.jobs, "jobs").to_pylist()}
    query = {(r["member_id"], r["job_id"]): r["query"] for r in conform(ood.pairs, "pairs").to_pylist()}
    labels = ood.labels
    keys = [(h.member_id, h.job_id) for h in labels]

    model_dir = Path(args.classifier)
    meta = json.loads((model_dir / "lantern_batch.json").read_text())
    max_chars = int(meta.get("text_max_chars") or DEFAULT_TEXT_MAX_CHARS)
    texts = [classifier_text(members[m], jobs[j], query[(m, j)], max_chars=max_chars) for m, j in keys]
    probs, classifier = score_classifier(model_dir, texts)

    policy = {}
    for m, j in keys:
        r = score_pair(members[m], jobs[j])
        policy[(m, j)] = {"label": r.fit_label, "total": r.total, "dimension_scores": r.dimension_scores,
                          "matched": list(r.matched_skills)}
    hand = [h.label for h in labels]
    predicted = [FIT_LABELS[max(range(3), key=p.__getitem__)] for p in probs]
    score = {k: p[0] - p[2] for k, p in zip(keys, probs, strict=True)}
    pairs = [{
        "member_id": m, "job_id": j, "member_title": members[m]["current_title"], "job_title": jobs[j]["title"],
        "hand_label": h.label, "p_high": round(p[0], 4), "p_medium": round(p[1], 4), "p_low": round(p[2], 4),
        "score": round(p[0] - p[2], 4), "classifier_label": c,
        "policy_label": policy[(m, j)]["label"], "policy_total": policy[(m, j)]["total"],
    } for (m, j), h, p, c in zip(keys, labels, probs, predicted, strict=True)]
    class_ordering = ordering(score, labels)
    return {
        "machine": host(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
        "set": str(OOD_DIR.relative_to(ROOT)), "members": len(members), "n_pairs": len(keys),
        "classifier": classifier,
        "classifier_ordering": class_ordering,
        "classifier_vs_hand": classification_report(hand, predicted),
        "policy_ordering": ordering({k: v["total"] for k, v in policy.items()}, labels),
        "policy_vs_hand": classification_report(hand, [policy[k]["label"] for k in keys]),
        "classifier_vs_policy": classification_report([policy[k]["label"] for k in keys], predicted),
        "vocabulary_reach": vocabulary_reach(members, jobs, labels, policy),
        "target_ordering": MIN_OOD_ORDERING,
        "pass": class_ordering["share"] >= MIN_OOD_ORDERING,
        "pairs": pairs,
    }


def print_ood(r: dict) -> None:
    """The summary table: ordering (with its ratio to the target), accuracy and macro-F1."""
    c = r["classifier"]
    print(f"ood: {r['members']} hand-written members, {r['n_pairs']} pairs ({r['set']}); classifier {c['version']} "
          f"(text {c['text_version']}, in-distribution held-out accuracy {c['heldout_accuracy_in_distribution']})")
    head = (f"{'scored by':<24}{'H>M>L':>15}{'/target':>9}{'H>M':>7}{'M>L':>7}{'H>L':>7}"
            f"{'members ordered':>17}{'accuracy':>10}{'macro-F1':>10}")
    print(head)
    print("-" * len(head))
    for name, o, rep in (("classifier p_high-p_low", r["classifier_ordering"], r["classifier_vs_hand"]),
                         ("policy total / label", r["policy_ordering"], r["policy_vs_hand"])):
        b = o["by_comparison"]
        print(f"{name:<24}{o['share']:>7.3f} ({o['held']:>2}/{o['comparisons']})"
              f"{o['share'] / r['target_ordering']:>8.2f}x{b['High>Medium']:>7.2f}{b['Medium>Low']:>7.2f}"
              f"{b['High>Low']:>7.2f}{o['members_fully_ordered']:>11}/{o['members']:<5}"
              f"{rep['accuracy']:>10.3f}{rep['macro_f1']:>10.3f}")
    for name, key in (("classifier", "classifier_vs_hand"), ("policy", "policy_vs_hand")):
        print(f"{name} confusion (rows hand High/Medium/Low, columns {name}): {r[key]['confusion']}")
    print(f"classifier vs policy label agreement: {r['classifier_vs_policy']['accuracy']:.3f}")
    v = r["vocabulary_reach"]
    print("vocabulary reach (members / jobs): level read {:.2f} / {:.2f}; role family known {:.2f} / {:.2f}; "
          "taxonomy city {:.2f} / {:.2f}; gazetteer place {:.2f} / {:.2f}; pairs with a required skill "
          "matched {:.2f}; hand-High pairs with policy skills >= 3: {:.2f}".format(
              v["level_read"]["members"], v["level_read"]["jobs"], v["role_family_known"]["members"],
              v["role_family_known"]["jobs"], v["location_a_taxonomy_city"]["members"],
              v["location_a_taxonomy_city"]["jobs"], v["location_in_gazetteer"]["members"],
              v["location_in_gazetteer"]["jobs"], v["pairs_with_a_required_skill_matched"],
              v["high_pairs_with_policy_skills_ge_3"]))
    print(f"claim: classifier ordering >= {r['target_ordering']}: {'pass' if r['pass'] else 'FAIL'}")


def run_ood(args) -> int:
    model_dir = Path(args.classifier)
    if not (model_dir / "lantern_batch.json").is_file():
        print(f"no exported classifier at {model_dir} (lantern_batch.json missing); pass --classifier DIR",
              file=sys.stderr)
        return 2
    result = bench_ood(args)
    print_ood(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "quality_ood.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot_ood(result, RESULTS / "quality_ood.png")
    print(f"wrote {path} and quality_ood.png")
    return 0 if result["pass"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["classifier", "explainer", "teacher_sft", "ood"],
                        help="one part; ood (an exported classifier on tests/data/ood) runs only when named")
    parser.add_argument("--pairs", type=int, default=3600, help="world pairs = classifier examples")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--text-max-chars", type=int, default=900)
    parser.add_argument("--explainer-examples", type=int, default=280)
    parser.add_argument("--explainer-epochs", type=float, default=1.0)
    parser.add_argument("--explainer-tokens", type=int, default=100, help="member/job prompt budgets")
    parser.add_argument("--eval-pairs", type=int, default=32)
    parser.add_argument("--teacher-examples", type=int, default=1000, help="D_seed pairs teacher SFT trains on")
    parser.add_argument("--teacher-heldout", type=int, default=150, help="held-out seed pairs (agreement)")
    parser.add_argument("--teacher-epochs", type=float, default=1.0)
    parser.add_argument("--teacher-lr", type=float, default=8e-4)
    parser.add_argument("--teacher-prompt", default="v2", help="teacher prompt version")
    parser.add_argument("--teacher-label-weight", type=float, default=1.0, help="train.label_loss_weight")
    parser.add_argument("--teacher-tokens", type=int, default=60, help="member/job prompt budgets")
    parser.add_argument("--teacher-target-tokens", type=int, default=96, help="prompt.max_target_tokens")
    parser.add_argument("--teacher-max-length", type=int, default=3072, help="prompt.max_length")
    parser.add_argument("--teacher-full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--classifier", default=str(DEFAULT_CLASSIFIER), help="ood: exported classifier dir")
    args = parser.parse_args()
    if args.only == "ood":
        return run_ood(args)

    from lantern_batch.config import RayConfig
    from lantern_batch.runtime import init_ray

    init_ray(RayConfig(num_cpus=8, log_to_driver=True))
    results: dict = {"machine": "2-core x86-64 CPU VM, 24 GiB, no GPU", "python": platform.python_version(),
                     "date": time.strftime("%Y-%m-%d")}
    path = RESULTS / "quality.json"
    if path.exists():
        results = {**json.loads(path.read_text()), **results}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        if args.only in (None, "classifier"):
            results["classifier"] = bench_classifier(args, Path(tmp))
            c = results["classifier"]
            print(f"classifier: accuracy {c['accuracy']:.3f} (claim >= {MIN_ACCURACY}: "
                  f"{'pass' if c['pass'] else 'FAIL'}), macro-F1 {c['macro_f1']:.3f}, ECE {c['ece']:.3f}, "
                  f"AUC High-vs-Low {c['ranking_auc_high_vs_low']:.3f}, {c['seconds']:.0f} s")
        if args.only in (None, "explainer"):
            results["explainer"] = bench_explainer(args, Path(tmp))
            e = results["explainer"]
            print(f"explainer: ROUGE-L {e['rougeL']:.3f} vs untrained student {e['base_rougeL']:.3f} "
                  f"(ratio {e['rougeL'] / max(e['base_rougeL'], 1e-6):.1f}x) vs SmolLM2-135M "
                  f"{e['source_rougeL']:.3f}; claim gain >= {MIN_ROUGE_L_GAIN}: {'pass' if e['pass'] else 'FAIL'}")
        if args.only in (None, "teacher_sft"):
            results["teacher_sft"] = bench_teacher_sft(args, Path(tmp))
            t = results["teacher_sft"]
            print(f"teacher SFT: label agreement with held-out seed labels {t['before']['accuracy']:.3f} before "
                  f"-> {t['after']['accuracy']:.3f} after (macro-F1 {t['before']['macro_f1']:.3f} -> "
                  f"{t['after']['macro_f1']:.3f}) on {t['heldout']} pairs; claim gain >= {MIN_AGREEMENT_GAIN}: "
                  f"{'pass' if t['pass'] else 'FAIL'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "quality.png")
    print(f"wrote {path} and quality.png")
    return 0 if all(results.get(k, {}).get("pass", True) for k in ("classifier", "explainer", "teacher_sft")) else 1


if __name__ == "__main__":
    sys.exit(main())
