"""The ``lantern-batch`` command line.

Every job subcommand takes ``--config FILE`` (optional: the built-in default is the local
demo's), any number of ``--set dotted.key=value``, ``--dry-run`` (print the resolved config and
the plan, do nothing), and the table shortcuts its config declares (``--members``, ``--jobs``,
``--pairs``, ``--out`` and others). Exit codes: 0 done, 1 other failure, 2 bad input or config,
3 blocked by the quality gate.

    lantern-batch generate --out runs/demo/data --num-pairs 2000
    lantern-batch validate --table members runs/demo/data/members
    lantern-batch synthesize --config configs/demo_synthesize.yaml --set vllm.batch_size=16
    lantern-batch distill classifier --dry-run
    lantern-batch forget --config configs/demo_forget.yaml --members request.txt
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lantern_batch.config import ConfigModel, dump_config, load_config
from lantern_batch.errors import LanternError


@dataclass(frozen=True)
class JobSpec:
    """A job: its config class and its ``run(cfg) -> int`` entry point, as import strings."""

    config: str
    run: str
    help: str

    def config_class(self) -> type[ConfigModel]:
        return _load(self.config)

    def runner(self) -> Callable[[Any], int]:
        return _load(self.run)


@dataclass(frozen=True)
class Command:
    """A subcommand: one job, or several selected by a positional stage (``distill classifier``)."""

    help: str
    jobs: dict[str | None, JobSpec] = field(default_factory=dict)


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


COMMANDS: dict[str, Command] = {
    "generate": Command(
        "Generate a synthetic world: members, jobs, pairs, seed labels, apply log.",
        {None: JobSpec("lantern_batch.world:GenerateConfig", "lantern_batch.world:run_generate", "")},
    ),
    "synthesize": Command(
        "Teacher synthesis: label pairs with one or more teachers (Ray Data + vLLM).",
        {None: JobSpec("lantern_batch.teacher.config:SynthesizeConfig", "lantern_batch.teacher.job:run", "")},
    ),
    "curate": Command(
        "Export a review sheet of teacher labels, or import review decisions into D_seed.",
        {
            "export": JobSpec("lantern_batch.teacher.config:CurateExportConfig", "lantern_batch.teacher.curation:run_export", "write a review sheet"),
            "import": JobSpec("lantern_batch.teacher.config:CurateImportConfig", "lantern_batch.teacher.curation:run_import", "apply decisions, write D_seed"),
        },
    ),
    "distill": Command(
        "Train a model with Ray Train: teacher SFT, classifier or explainer student.",
        {
            "teacher-sft": JobSpec("lantern_batch.distill.config:TeacherSFTConfig", "lantern_batch.distill.job:run_teacher_sft", "fine-tune the in-house teacher on D_seed"),
            "classifier": JobSpec("lantern_batch.distill.config:ClassifierConfig", "lantern_batch.distill.job:run_classifier", "distil the encoder classifier"),
            "explainer": JobSpec("lantern_batch.distill.config:ExplainerConfig", "lantern_batch.distill.job:run_explainer", "distil the decoder explainer"),
            "chain": JobSpec("lantern_batch.distill.config:ChainConfig", "lantern_batch.distill.job:run_chain", "teacher -> student -> smaller student, each export teaching the next"),
        },
    ),
    "precompute": Command(
        "Nightly precompute: score pairs and write published, partitioned Parquet.",
        {None: JobSpec("lantern_batch.precompute.config:PrecomputeConfig", "lantern_batch.precompute.job:run", "")},
    ),
    "evaluate": Command(
        "Evaluate students against the teacher and write an HTML report.",
        {None: JobSpec("lantern_batch.evaluate.config:EvaluateConfig", "lantern_batch.evaluate.job:run", "")},
    ),
    "forget": Command(
        "Delete members' rows from every output (right to be forgotten) and tombstone them.",
        {None: JobSpec("lantern_batch.forget.config:ForgetConfig", "lantern_batch.forget.job:run", "")},
    ),
    "demo": Command(
        "Run the whole pipeline at toy scale on this machine (everything under runs/demo/).",
        {None: JobSpec("lantern_batch.demo:DemoConfig", "lantern_batch.demo:run", "")},
    ),
}


def _add_common(p: argparse.ArgumentParser, cfg_cls: type[ConfigModel]) -> None:
    p.add_argument("--config", help="YAML config file (default: the built-in demo config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set vllm.batch_size=16")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and plan; do nothing")
    for flag, key in cfg_cls.SHORTCUTS.items():
        p.add_argument(flag, dest=f"shortcut:{key}", metavar="VALUE", help=f"shortcut for --set {key}=VALUE")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser. Only the selected command's config class is imported (configs are
    light modules), so ``lantern-batch generate`` never imports the teacher's or trainer's code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv else None
    chosen_stage = argv[1] if len(argv) > 1 else None
    parser = argparse.ArgumentParser(prog="lantern-batch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if None in cmd.jobs:
            if name == chosen:
                _add_common(p, cmd.jobs[None].config_class())
        else:
            stages = p.add_subparsers(dest="stage", required=True)
            for stage, spec in cmd.jobs.items():
                sp = stages.add_parser(stage, help=spec.help, description=spec.help)
                if name == chosen and stage == chosen_stage:
                    _add_common(sp, spec.config_class())

    v = sub.add_parser("validate", help="Validate an input table: counts of good and bad rows by reason.")
    v.add_argument("--table", required=True, choices=["members", "jobs", "pairs"])
    v.add_argument("path", help="Parquet file or directory, local or s3://")
    v.add_argument("--errors-out", help="write the error rows as Parquet to this directory")
    v.add_argument("--max-text-chars", type=int, default=20_000)
    v.add_argument("--shard-rows", type=int, default=2_000_000,
                   help="rows per duplicate-detection pass: memory is bounded by this, not by the table")

    m = sub.add_parser("models", help="Prepare the bundled models, or resolve a model reference.")
    msub = m.add_subparsers(dest="action", required=True)
    msub.add_parser("prepare", help="convert/cache the bundled models (idempotent)")
    r = msub.add_parser("resolve", help="print the local directory of a model reference")
    r.add_argument("ref")
    return parser


def resolve_job_config(spec: JobSpec, args: argparse.Namespace) -> ConfigModel:
    """Defaults -> --config file -> shortcuts -> --set overrides (later wins)."""
    overrides = [f"{dest.split(':', 1)[1]}={value}" for dest, value in vars(args).items()
                 if dest.startswith("shortcut:") and value is not None]
    return load_config(spec.config_class(), args.config, overrides + list(args.overrides))


def _run_validate(args: argparse.Namespace) -> int:
    from lantern_batch.validation import validate_path

    validate_path(args.table, args.path, errors_out=args.errors_out,
                  max_text_chars=args.max_text_chars, shard_rows=args.shard_rows, echo=print)
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from lantern_batch import models

    if args.action == "prepare":
        for ref, path in models.prepare_bundled().items():
            print(f"{ref}: {path}")
    else:
        print(models.resolve(args.ref))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lantern-batch`` console script; returns the exit code."""
    args = build_parser(argv).parse_args(argv)
    try:
        if args.command == "validate":
            return _run_validate(args)
        if args.command == "models":
            return _run_models(args)
        cmd = COMMANDS[args.command]
        spec = cmd.jobs[getattr(args, "stage", None)]
        cfg = resolve_job_config(spec, args)
        if args.dry_run:
            print(dump_config(cfg))
            plan = getattr(cfg, "plan", None)
            if callable(plan):
                print("# plan")
                for step in plan():
                    print(f"- {step}")
            return 0
        return int(spec.runner()(cfg) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        found = project_error(exc)
        if found is None:
            raise
        print(f"lantern-batch {args.command}: error: {found}", file=sys.stderr)
        return found.exit_code


def project_error(exc: BaseException) -> LanternError | None:
    """The project error behind ``exc``, or None: ``exc`` itself when it is one, else the first
    one down its explicit causes (``raise ... from``), where a Ray wrapper stands for what it
    wraps (its ``cause``: what a Ray task or actor raised; Ray Data's ``UserCodeException`` is
    raised from the UDF's error). Ray's copy of a project error is an instance of the same class,
    but its message carries the remote traceback: the user gets the original's one line. An
    error raised while another was being handled is not its cause: a bug stays a traceback."""
    ray_errors = sys.modules.get("ray.exceptions")
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if ray_errors is not None and isinstance(e, ray_errors.RayError) and getattr(e, "cause", None) is not None:
            e = e.cause
            continue
        if isinstance(e, LanternError):
            return e
        e = e.__cause__
    return None


if __name__ == "__main__":
    sys.exit(main())
