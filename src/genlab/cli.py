"""The ``genlab`` command: list, run, report, demo.

Config fields are parsed by tyro from the study's config dataclass (nested fields with dotted
names, e.g. ``--optim.lr 0.01``), starting from the chosen preset. Bad input never shows a
traceback: it prints one line naming the field or choice and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genlab.errors import ConfigError, GenlabError

USAGE = """usage: genlab COMMAND ...

commands:
  list                         the studies, their presets and a line on each
  run STUDY [--preset NAME] [--out DIR] [--resume] [--force] [--check] [--quiet]
            [--FIELD VALUE ...]
                               run a study (genlab run STUDY --help lists every field)
  report RUN_DIR               rebuild figures and reports from a run folder's files
  report --index DIR           write DIR/index.html: a front page for every run folder under DIR
  demo [--out DIR] [--quiet]   run every study's smoke preset and write an index.html
  lock MODEL --out DIR [--rank R] [...]
                               lock a causal LM (a Hugging Face folder or smollm2) against
                               fine-tuning: DLR-Nets distilled in place of its MLPs
"""

RUN_OPTIONS = """Run options: --preset NAME (default smoke), --out DIR (the run folder; default
runs/STUDY/NAME), --resume (continue an interrupted run), --force (replace a genlab run folder;
never any other folder), --check (validate the config, print the run folder, run nothing),
--quiet (no progress display). Every config field below can be set; nested fields use dotted
names."""


def fail(message: str, code: int = 2) -> int:
    line = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"genlab: error: {line}", file=sys.stderr)
    return code


def cmd_list() -> int:
    from genlab.studies import STUDIES

    for name, study in STUDIES.items():
        print(f"{name:<12} {study.description}")
        print(f"{'':<12} presets: {', '.join(study.presets)}")
    return 0


def parse_run_args(study_name: str, argv: list[str]):
    """(study, preset name, config, run options) from ``genlab run STUDY ...`` arguments."""
    import tyro

    from genlab.studies import STUDIES

    if study_name not in STUDIES:
        raise ConfigError(
            "STUDY", f"unknown study {study_name!r}; choose from {', '.join(STUDIES)}"
        )
    study = STUDIES[study_name]
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", default="smoke")
    pre.add_argument("--out", type=Path, default=None)
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--force", action="store_true")
    pre.add_argument("--check", action="store_true")
    pre.add_argument("--quiet", action="store_true")
    opts, rest = pre.parse_known_args(argv)
    if opts.preset not in study.presets:
        raise ConfigError(
            "--preset",
            f"unknown preset {opts.preset!r} for {study_name}; "
            f"choose from {', '.join(study.presets)}",
        )
    config = one_line_errors(
        tyro.cli,
        study.config_cls,
        default=study.presets[opts.preset](),
        args=rest,
        prog=f"genlab run {study_name}",
        description=f"{study.description}\n\n{RUN_OPTIONS}",
    )
    return study, opts.preset, config, opts


def _flag(argument) -> str:
    """The command-line spelling of a tyro argument (e.g. ``--optim.lr``)."""
    names = getattr(getattr(argument, "lowered", None), "name_or_flags", None)
    return "/".join(names) if names else str(argument)


def _parse_error_message(event) -> str | None:
    """One line for a tyro parse failure, from the event's fields (None: unknown event)."""
    from tyro import _errors as e

    if isinstance(event, e.InstantiationFailure):
        where = _flag(event.argument) if event.argument is not None else "arguments"
        return f"{where}: {event.message}"
    if isinstance(event, e.InvalidChoice):
        return f"{_flag(event.argument)}: invalid choice {event.value!r}; choose from " + (
            ", ".join(event.choices)
        )
    if isinstance(event, e.BadValue):
        if event.offending_value is None:
            return f"{_flag(event.argument)}: missing value"
        return f"{_flag(event.argument)}: takes no value, got {event.offending_value!r}"
    if isinstance(event, e.UnrecognizedArgs):
        return "unrecognized arguments: " + " ".join(event.tokens)
    if isinstance(event, e.MissingArgs):
        return "missing value for " + ", ".join(_flag(a.arg) for a in event.missing_arguments)
    return None


class _ParseFailed(Exception):
    pass


def one_line_errors(parse, *args, **kwargs):
    """Call tyro's ``parse`` so that a bad argument raises GenlabError with one line naming it,
    instead of tyro's multi-line box. tyro's parse-error hook (``tyro._errors``, pinned in
    constraints.txt) gives the failure as data; an event it does not know exits with tyro's
    own output."""
    from tyro import _errors

    def hook(event) -> None:
        message = _parse_error_message(event)
        if message is not None:
            raise _ParseFailed(message)

    try:
        with _errors.on_parse_error(hook):
            return parse(*args, **kwargs)
    except _ParseFailed as failure:
        raise GenlabError(str(failure)) from None


def cmd_run(argv: list[str]) -> int:
    from genlab.runs import execute, run_name

    if not argv or argv[0].startswith("-"):
        return fail("usage: genlab run STUDY [options]; see `genlab list`")
    study, preset, config, opts = parse_run_args(argv[0], argv[1:])
    study.check(config)
    out = opts.out or Path("runs") / study.name / run_name(preset, config, study.presets[preset]())
    if opts.check:
        print(f"{study.name}: config valid -> {out}")
        return 0
    summary = execute(study, config, out, resume=opts.resume, force=opts.force, quiet=opts.quiet)
    print(f"{study.name}: {summary['status']} -> {out / 'report.md'}")
    return 0 if summary["status"] == "complete" else 1


def cmd_report(argv: list[str]) -> int:
    from genlab.report import find_runs, write_index
    from genlab.runs import RunPaths, read_json
    from genlab.studies import STUDIES

    if argv[:1] == ["--index"]:  # DIR/index.html: a front page for every run folder under DIR
        if len(argv) != 2 or argv[1].startswith("-"):
            return fail("usage: genlab report --index DIR")
        folder = Path(argv[1])
        if not folder.is_dir():
            return fail(f"{folder}: not a folder")
        runs = find_runs(folder)
        if not runs:
            return fail(f"{folder}: no run folder found (a folder whose env.json names a study)")
        print(f"wrote {write_index(folder, runs)} ({len(runs)} run{'s' * (len(runs) != 1)})")
        return 0
    if len(argv) != 1 or argv[0].startswith("-"):
        return fail("usage: genlab report RUN_DIR | genlab report --index DIR")
    paths = RunPaths(Path(argv[0]))
    if not paths.env.exists():
        return fail(f"{paths.root}: not a run folder (no env.json)")
    study = read_json(paths.env).get("study")
    if study not in STUDIES:
        return fail(f"{paths.env}: unknown study {study!r}")
    STUDIES[study].report(paths)
    print(f"rebuilt {paths.report_md} and {paths.report_html}")
    return 0


def cmd_demo(argv: list[str]) -> int:
    from genlab.demo import run_demo

    pre = argparse.ArgumentParser(prog="genlab demo")
    pre.add_argument("--out", type=Path, default=Path("runs/demo"))
    pre.add_argument("--quiet", action="store_true")
    opts = pre.parse_args(argv)
    return run_demo(opts.out, quiet=opts.quiet)


def cmd_lock(argv: list[str]) -> int:
    from genlab.lock.publish import main as lock_main

    return lock_main(argv)


COMMANDS = {"list": lambda argv: cmd_list(), "run": cmd_run, "report": cmd_report,
            "demo": cmd_demo, "lock": cmd_lock}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        return fail(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
    try:
        return COMMANDS[argv[0]](argv[1:])
    except GenlabError as e:
        return fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted; continue with --resume", 130)


if __name__ == "__main__":
    sys.exit(main())
