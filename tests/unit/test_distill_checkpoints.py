"""Checkpoint manifests: a checkpoint counts as complete only when every file its ranks wrote is
on storage with its size, so a resume can use one that a killed run uploaded but Ray Train
never registered (no Ray here: plain directories)."""

import json
import os
import shutil

import pytest

from lantern_batch.distill.trainer import (
    MANIFEST_PREFIX,
    STATE_FILE,
    checkpoint_step_if_complete,
    latest_complete_checkpoint,
    write_manifest,
)


def _rank_dir(tmp_path, name, rank, files, file_ranks, step):
    d = tmp_path / "staging" / f"{name}-{rank}"
    for rel, body in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(body)
    write_manifest(str(d), rank, file_ranks, step)
    return d


def _upload(src, dst, skip=()):
    """What Ray's upload does: every rank's files merged into one checkpoint directory."""
    for root, _, names in os.walk(src):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), src)
            if rel in skip:
                continue
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copy(os.path.join(root, n), os.path.join(dst, rel))


def test_single_rank_checkpoint_complete_only_with_all_files(tmp_path):
    state = json.dumps({"step": 6}).encode()
    src = _rank_dir(tmp_path, "c", 0, {STATE_FILE: state, "model.pt": b"m" * 100, "optimizer.pt": b"o" * 50}, [0], 6)
    run = tmp_path / "run"
    _upload(src, run / "checkpoint_b", skip=("model.pt",))  # killed mid-upload
    assert checkpoint_step_if_complete(str(run / "checkpoint_b")) is None
    _upload(src, run / "checkpoint_b")
    assert checkpoint_step_if_complete(str(run / "checkpoint_b")) == 6
    (run / "checkpoint_b" / "model.pt").write_bytes(b"m" * 99)  # truncated file
    assert checkpoint_step_if_complete(str(run / "checkpoint_b")) is None


def test_deepspeed_checkpoint_needs_every_ranks_manifest(tmp_path):
    run = tmp_path / "run" / "checkpoint_x"
    r0 = _rank_dir(tmp_path, "x", 0, {STATE_FILE: b"{}", "ds/zero/rank0.pt": b"a" * 10}, [0, 1], 9)
    r1 = _rank_dir(tmp_path, "x", 1, {"ds/zero/rank1.pt": b"b" * 10}, [0, 1], 9)
    _upload(r0, run)
    assert checkpoint_step_if_complete(str(run)) is None  # rank 1's shard never arrived
    _upload(r1, run)
    assert checkpoint_step_if_complete(str(run)) == 9
    assert {p.name for p in run.iterdir()} >= {f"{MANIFEST_PREFIX}0.json", f"{MANIFEST_PREFIX}1.json"}


def test_latest_complete_checkpoint_picks_highest_complete_step(tmp_path):
    run = tmp_path / "run"
    for name, step, complete in (("checkpoint_2026-01-01_00-00-03", 3, True),
                                 ("checkpoint_2026-01-01_00-00-09", 9, False),
                                 ("checkpoint_2026-01-01_00-00-06", 6, True)):
        src = _rank_dir(tmp_path, name, 0, {STATE_FILE: b"{}", "model.pt": b"w" * step}, [0], step)
        _upload(src, run / name, skip=() if complete else ("model.pt",))
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    path, step = latest_complete_checkpoint(str(run))
    assert step == 6 and path.endswith("checkpoint_2026-01-01_00-00-06")
    assert latest_complete_checkpoint(str(tmp_path / "absent")) is None


def test_train_loop_runs_from_the_driver_working_directory(tmp_path, monkeypatch):
    """Ray Train starts workers in a directory of its own: relative config paths must still
    resolve as on the driver (the demo's configs name runs/demo/... relatively)."""
    import functools
    import inspect

    from lantern_batch.distill.trainer import loop_in_driver_cwd

    (tmp_path / "runs").mkdir()
    elsewhere = tmp_path / "ray-train-working-dir"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    seen = {}

    def loop(config):
        seen["exists"] = os.path.isdir(config["path"])
        seen["cwd"] = os.getcwd()

    wrapped = functools.partial(loop_in_driver_cwd, loop, str(tmp_path))
    assert list(inspect.signature(wrapped).parameters) == ["config"]  # how Ray Train calls it
    wrapped({"path": "runs"})
    assert seen == {"exists": True, "cwd": str(tmp_path)}


def _fingerprinted_checkpoint(run, name, step, fingerprint, tmp_path):
    src = _rank_dir(tmp_path, name, 0, {STATE_FILE: json.dumps({"step": step}).encode(), "model.pt": b"w" * 8},
                    [0], step)
    manifest = src / f"{MANIFEST_PREFIX}0.json"
    body = json.loads(manifest.read_text())
    body["data_fingerprint"] = fingerprint
    manifest.write_text(json.dumps(body))
    _upload(src, run / name)


def test_storage_scan_adopts_only_checkpoints_of_the_same_training_data(tmp_path):
    run = tmp_path / "run"
    _fingerprinted_checkpoint(run, "checkpoint_a", 4, "data-A", tmp_path)
    _fingerprinted_checkpoint(run, "checkpoint_b", 9, "data-B", tmp_path)
    assert latest_complete_checkpoint(str(run), "data-A")[1] == 4
    assert latest_complete_checkpoint(str(run), "data-B")[1] == 9
    assert latest_complete_checkpoint(str(run), "data-C") is None
    assert checkpoint_step_if_complete(str(run / "checkpoint_b"), "data-A") is None


def test_an_explicit_run_name_reused_for_other_data_is_an_error_naming_both(tmp_path):
    from lantern_batch.distill.config import TrainSettings
    from lantern_batch.distill.trainer import fit
    from lantern_batch.errors import InputError

    storage = tmp_path / "train"
    _fingerprinted_checkpoint(storage / "nightly", "checkpoint_000001", 3, "data-old", tmp_path)
    train = TrainSettings(storage_path=str(storage), run_name="nightly", resume=True)
    with pytest.raises(InputError) as err:
        fit(train_loop=lambda config: None, loop_config={}, train_dataset=None, train=train,
            run_name="nightly", data_fingerprint="data-new")
    assert "data-old" in str(err.value) and "data-new" in str(err.value) and "nightly" in str(err.value)
    assert (storage / "nightly" / "checkpoint_000001").is_dir()  # nothing deleted


def _engine(tmp_path):
    import torch

    from lantern_batch.distill.trainer import Engine, linear_warmup_decay

    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = linear_warmup_decay(optimizer, total_steps=10, warmup_ratio=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return Engine(module=model, model=model, optimizer=optimizer, scheduler=scheduler)


class _Payload:
    """A pickle that runs code when loaded (what a writer of the storage bucket could plant)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_restore_unpickles_nothing_but_tensors_and_checks_the_manifest(tmp_path):
    import pickle

    import torch

    from lantern_batch.distill.trainer import OPTIM_FILE, verify_checkpoint
    from lantern_batch.errors import InputError

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    saved = _engine(tmp_path)
    saved.save(str(ckpt), rank=0)
    (ckpt / STATE_FILE).write_text(json.dumps({"step": 1}))
    write_manifest(str(ckpt), 0, [0], 1, "data-A")
    # The optimizer state is tensors and plain containers: loadable with weights_only.
    torch.load(ckpt / OPTIM_FILE, weights_only=True)
    fresh = _engine(tmp_path)
    fresh.load(str(ckpt))
    assert fresh.scheduler.last_epoch == saved.scheduler.last_epoch
    assert torch.equal(fresh.optimizer.state_dict()["state"][0]["exp_avg"],
                       saved.optimizer.state_dict()["state"][0]["exp_avg"])

    # A planted pickle is refused: by the manifest's hash, and by weights_only when the
    # manifest was rewritten to match.
    marker = tmp_path / "pwned"
    (ckpt / OPTIM_FILE).write_bytes(pickle.dumps({"optimizer": _Payload(str(marker))}))
    with pytest.raises(InputError, match="sha256"):
        fresh.load(str(ckpt))
    write_manifest(str(ckpt), 0, [0], 1, "data-A")
    verify_checkpoint(str(ckpt))
    with pytest.raises(pickle.UnpicklingError):
        fresh.load(str(ckpt))
    assert not marker.exists()
    os.remove(ckpt / f"{MANIFEST_PREFIX}0.json")
    with pytest.raises(InputError, match="manifest"):
        fresh.load(str(ckpt))



def test_every_torch_load_in_the_code_is_weights_only():
    """No torch.load anywhere in the package, the benchmarks or the job scripts may unpickle
    arbitrary objects: each passes weights_only=True (tensors and plain containers only)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    calls, unsafe = 0, []
    for folder in ("lantern_batch", "bench", "jobs"):
        for f in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "torch"):
                    continue
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                flag = kw.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{f.relative_to(root)}:{node.lineno}")
    assert calls >= 4  # the trainer's restore and the three final evaluations
    assert unsafe == []


def test_deepspeed_restore_checks_the_manifest_before_its_loader_unpickles(tmp_path):
    """DeepSpeed's loader unpickles its own shards: a shard that differs from the run's manifest
    stops the restore before the loader is called."""
    from lantern_batch.distill.trainer import DS_DIR, Engine
    from lantern_batch.errors import InputError

    class _DeepSpeed:
        loaded: list[str] = []

        def load_checkpoint(self, directory, tag):
            self.loaded.append(directory)

    ckpt = tmp_path / "ckpt"
    (ckpt / DS_DIR / "zero").mkdir(parents=True)
    (ckpt / DS_DIR / "zero" / "mp_rank_00_model_states.pt").write_bytes(b"shard")
    (ckpt / STATE_FILE).write_text(json.dumps({"step": 1}))
    write_manifest(str(ckpt), 0, [0], 1, "data-A")
    module = _DeepSpeed()
    engine = Engine(module=module, model=None, optimizer=None, scheduler=None, deepspeed=True)
    engine.load(str(ckpt))
    assert module.loaded == [str(ckpt / DS_DIR)]
    (ckpt / DS_DIR / "zero" / "mp_rank_00_model_states.pt").write_bytes(b"planted")
    with pytest.raises(InputError, match="sha256"):
        engine.load(str(ckpt))
    (ckpt / DS_DIR / "zero" / "extra.pt").write_bytes(b"unlisted")
    with pytest.raises(InputError, match="sha256"):
        engine.load(str(ckpt))
    assert module.loaded == [str(ckpt / DS_DIR)]

def test_lr_schedule_warms_up_then_decays_to_zero():
    import torch

    from lantern_batch.distill.trainer import linear_warmup_decay

    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = linear_warmup_decay(optimizer, total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Two warm-up steps, the first already at half the peak (a first step at lr 0 is what broke
    # the demo's teacher SFT), then linear decay: 1 - (step - 2) / 8.
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert lrs[2:] == [1.0 - k / 8 for k in range(8)]
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_heldout_gate_stops_a_collapsed_teacher_and_names_what_it_predicted():
    from lantern_batch.distill.trainer import require_heldout
    from lantern_batch.errors import QualityGateError
    from lantern_batch.metrics import classification_report

    # The demo's teacher SFT at 0944473: every held-out pair predicted Medium.
    truth = ["High"] * 39 + ["Medium"] * 27 + ["Low"] * 34
    collapsed = classification_report(truth, ["Medium"] * 100)
    with pytest.raises(QualityGateError, match=r"macro_f1 0\.1\d+ is below min_macro_f1 0\.5 "
                                               r"\(it predicted High 0, Medium 100, Low 0\)") as err:
        require_heldout("teacher T2 after SFT", collapsed, "macro_f1", 0.5)
    assert err.value.exit_code == 3
    # The 2026-12-02 evening teacher passes the same bar; no bar, no check; no held-out pair fails.
    learnt = classification_report(truth, ["High"] * 38 + ["Medium"] + ["High"] * 19 + ["Medium"] * 8
                                   + ["High"] * 2 + ["Medium"] * 2 + ["Low"] * 30)
    require_heldout("teacher T2 after SFT", learnt, "macro_f1", 0.5)
    require_heldout("teacher T2 after SFT", collapsed, "macro_f1", None)
    with pytest.raises(QualityGateError, match="no held-out pairs"):
        require_heldout("classifier", {"accuracy": None}, "accuracy", 0.8)
