"""Benchmark: training throughput of the classifier and the explainer on Ray Train, 1 vs 2 workers.

    flock /tmp/lantern-heavy.lock python bench/train.py          # ~8 min on 2 cores
    python bench/train.py --only explainer                        # one part
    python bench/train.py --gpu                                   # on a GPU machine: + tokens/s, MFU

Each measurement runs the real job (Ray Data prep, Ray Train, export) for a fixed number of
optimizer steps and reads the steady-state samples/s the workers record in the final
checkpoint (all workers together, the first step's warm-up excluded). Per-worker batch sizes
stay fixed, so 2 workers process twice the samples per step (data-parallel, DDP over gloo):

* classifier — MiniLM, batch 16 per worker, texts cut at 160 tokens, bf16 autocast;
* explainer — every third layer of SmolLM2-135M (~63M parameters), batch 2 per worker,
  ~470-token prompts + ~70-token explanations, SFT + TVD against the stored top-k.

On this 2-core machine one worker uses both cores (2 torch threads); two workers get one core
each, so the ratio shows what data parallelism costs (gradient all-reduce, two processes) when
no extra compute comes with it — on a cluster each worker brings its own GPU.

``--gpu`` (needs CUDA) adds a plain-PyTorch measurement of the explainer's training step on
one GPU: tokens/s and model FLOPs utilisation (6 · parameters · tokens per second over the
GPU's peak bf16 FLOP/s).

Writes ``bench/results/train.json`` and ``bench/results/train.png``.
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


def _world(tmp: Path) -> tuple[dict[str, str], Path]:
    from lantern_batch import io
    from lantern_batch.distill.policy_teacher import add_topk, policy_teacher_labels
    from lantern_batch.models import resolve
    from lantern_batch.world import GenerateConfig, generate

    generate(GenerateConfig(out=str(tmp / "world"), num_members=300, num_jobs=100, num_pairs=1200, num_seed=100, seed=5))
    inputs = {t: str(tmp / "world" / t) for t in ("members", "jobs", "pairs")}
    members, jobs = io.read_table(inputs["members"]), io.read_table(inputs["jobs"])
    labels = policy_teacher_labels(members, jobs, io.read_table(inputs["pairs"]))
    io.write_table(labels, str(tmp / "synth_cls" / "labels" / "teacher=policy"))
    # D_t for the explainer: SmolLM2's top-20 over 120 explanations (what synthesis stores).
    with_topk = add_topk(labels.slice(0, 120), members, jobs, str(resolve("bundled:smollm2")), k=20)
    io.write_table(with_topk, str(tmp / "synth_exp" / "labels" / "teacher=policy"))
    return inputs, tmp


def run_classifier(inputs: dict, tmp: Path, workers: int, steps: int) -> dict:
    from lantern_batch.config import load_config
    from lantern_batch.distill.config import ClassifierConfig
    from lantern_batch.distill.job import run_classifier as run

    out = tmp / f"cls_{workers}"
    cfg = load_config(ClassifierConfig, None, [
        f"out={out}", f"data.teacher_labels={tmp / 'synth_cls'}", "data.seed=null", "data.holdout_fraction=0.05",
        "model.max_length=160", "model.text_max_chars=900", f"train.max_steps={steps}", "train.batch_size=16",
        f"train.scaling.num_workers={workers}", f"train.storage_path={tmp / 'train'}",
        "train.checkpoint_every_steps=100000", "train.resume=false", "calibrate=false",
    ], base={"inputs": inputs})
    assert run(cfg) == 0
    train = json.loads((out / "metrics.json").read_text())["train"]
    return {"workers": workers, "steps": train["step"], "batch_per_worker": 16,
            "samples_per_s": train["samples_per_s"]}


def run_explainer(inputs: dict, tmp: Path, workers: int, steps: int) -> dict:
    from lantern_batch.config import load_config
    from lantern_batch.distill.config import ExplainerConfig
    from lantern_batch.distill.job import run_explainer as run

    out = tmp / f"exp_{workers}"
    cfg = load_config(ExplainerConfig, None, [
        f"out={out}", f"data.teacher_labels={tmp / 'synth_exp'}", "data.holdout_fraction=0.05",
        "prompt.member_tokens=300", "prompt.job_tokens=300", "student.source=bundled:smollm2", "student.keep_every=3",
        f"train.max_steps={steps}", "train.batch_size=2", f"train.scaling.num_workers={workers}",
        f"train.storage_path={tmp / 'train'}", "train.checkpoint_every_steps=100000", "train.resume=false",
        "eval.num_pairs=1", "eval.max_new_tokens=8", "eval.loss_pairs=0",
    ], base={"inputs": inputs})
    assert run(cfg) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    train = metrics["train"]
    return {"workers": workers, "steps": train["step"], "batch_per_worker": 2,
            "samples_per_s": train["samples_per_s"], "parameters": metrics["parameters"]}


def gpu_explainer(steps: int = 30, batch: int = 16, prompt_len: int = 560, target_len: int = 80) -> dict:
    """Tokens/s and MFU of the explainer's training step on one GPU (plain PyTorch, bf16)."""
    import torch

    from lantern_batch.distill.decoder import (
        DecoderForKD,
        collate_lm,
        count_parameters,
        load_student,
    )
    from lantern_batch.distill.losses import explainer_loss
    from lantern_batch.models import resolve

    device = torch.device("cuda")
    model, keep, _ = load_student(str(resolve("bundled:smollm2")), keep_every=3)
    wrapper = DecoderForKD(model).to(device).train()
    params = count_parameters(model)
    opt = torch.optim.AdamW(wrapper.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    rows = {"prompt_ids": [torch.randint(100, 40000, (prompt_len,), generator=g).tolist()] * batch,
            "target_ids": [torch.randint(100, 40000, (target_len,), generator=g).tolist()] * batch}
    b = {k: v.to(device) for k, v in collate_lm(rows, 0).items()}
    topk_ids = torch.randint(0, 49152, (batch, prompt_len + target_len, 20), device=device)
    topk_lps = torch.log_softmax(torch.randn(batch, prompt_len + target_len, 20, device=device), -1)
    kd_mask = b["labels"] != -100
    times = []
    for i in range(steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, sel = wrapper(b["input_ids"], b["attention_mask"], b["labels"])
        loss, _ = explainer_loss(logits, b["labels"][sel], topk_ids[sel], topk_lps[sel], kd_mask[sel])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - t)
    step_s = sum(times) / len(times)
    tokens = batch * (prompt_len + target_len)
    tokens_per_s = tokens / step_s
    name = torch.cuda.get_device_name()
    peak = 989e12 if "H100" in name else (989e12 if "H200" in name else None)  # dense bf16
    mfu = 6 * params * tokens_per_s / peak if peak else None
    return {"device": name, "parameters": params, "layers": keep, "batch": batch,
            "tokens_per_step": tokens, "tokens_per_s": round(tokens_per_s), "mfu": mfu}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, title in ((axes[0], "classifier", "classifier (MiniLM)"), (axes[1], "explainer", "explainer (63M decoder)")):
        if key not in results:
            ax.set_axis_off()
            continue
        runs = results[key]["runs"]
        ax.bar([f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}" for r in runs],
               [r["samples_per_s"] for r in runs], color=["#4c72b0", "#dd8452"])
        ax.set_title(title)
        ax.set_ylabel("training samples/s")
    fig.suptitle("Ray Train on a 2-core CPU: 1 worker (2 threads) vs 2 workers (1 thread each)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier-steps", type=int, default=40)
    parser.add_argument("--explainer-steps", type=int, default=16)
    parser.add_argument("--only", choices=["classifier", "explainer"], help="one part (merged into the JSON)")
    parser.add_argument("--gpu", action="store_true", help="also measure tokens/s and MFU on a CUDA GPU")
    args = parser.parse_args()
    results: dict = {"machine": "2-core x86-64 CPU VM, 24 GiB, no GPU", "python": platform.python_version(),
                     "date": time.strftime("%Y-%m-%d")}
    path = RESULTS / "train.json"
    if path.exists():
        results = {**json.loads(path.read_text()), **results}
    if args.gpu:
        results["gpu_explainer"] = gpu_explainer()
        print(json.dumps(results["gpu_explainer"]))
    else:
        from lantern_batch.config import RayConfig
        from lantern_batch.runtime import init_ray

        init_ray(RayConfig(num_cpus=8, log_to_driver=True))
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            inputs, base = _world(Path(tmp))
            for key, fn, steps in (("classifier", run_classifier, args.classifier_steps),
                                   ("explainer", run_explainer, args.explainer_steps)):
                if args.only and key != args.only:
                    continue
                runs = [fn(inputs, base, w, steps) for w in (1, 2)]
                ratio = runs[1]["samples_per_s"] / runs[0]["samples_per_s"]
                results[key] = {"runs": runs, "ratio_2_vs_1": round(ratio, 3)}
                print(f"{key}: 1 worker {runs[0]['samples_per_s']:.2f} samples/s, 2 workers "
                      f"{runs[1]['samples_per_s']:.2f} samples/s, ratio {ratio:.2f}x")
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(results, RESULTS / "train.png")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
