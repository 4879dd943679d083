"""Benchmark: what the students learn from a perfect teacher on the synthetic world.

    flock /tmp/lantern-heavy.lock python bench/quality.py        # ~1.5 h on 2 cores (all parts)
    python bench/quality.py --only classifier --pairs 4000         # one part, another size
    python bench/quality.py --only teacher_sft --teacher-epochs 2  # teacher SFT, longer

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["classifier", "explainer", "teacher_sft"])
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
    args = parser.parse_args()

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
