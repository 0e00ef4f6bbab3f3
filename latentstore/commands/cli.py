"""The `latentstore` command line. Each command is a thin wrapper over a library function.

A command imports what it runs, when it runs it: `info` never loads CompressAI (nor torch), and
`--help` loads nothing heavy. `build` takes its options from BuildConfig's fields (their help, choices
and defaults live there), and checks them all before the codec is imported.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import click

from ..errors import ConfigError, LatentstoreError

STORAGE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                  errno.EFBIG: "the file size limit was reached",
                  errno.EROFS: "the output is on a read-only file system", errno.EACCES: "permission denied"}



class LazyHelpOption(click.Option):
    """An option whose help text is computed when help is shown (`help_text()`)."""

    def __init__(self, *args, help_text, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_text = help_text

    def get_help_record(self, ctx):
        self.help = self.help_text()
        return super().get_help_record(ctx)


def _coder_help() -> str:
    from ..coders.names import coder_help

    return coder_help()


class _FieldType(click.ParamType):
    """A config field's own reader (`opt(parse=...)`): its ConfigError is click's message for the flag."""

    def __init__(self, option):
        self.option, self.name = option, option.metavar or "TEXT"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):   # already read
            return value
        try:
            return self.option.parse(value)
        except (ConfigError, ValueError) as exc:
            self.fail(str(exc) if isinstance(exc, ConfigError) else f"{value!r} is not a valid {self.name}",
                      param, ctx)


def field_options(cls, names=None, required=()) -> list:
    """Click options for the fields of the config dataclass `cls` (all, or `names`), with the help, choices
    and shown defaults the fields declare (latentstore/flags.py). Each option's value is None unless
    given: the command passes only given values, so the dataclass's defaults stay the only ones."""
    from ..flags import options

    made = []
    for o in options(cls):
        if names is not None and o.name not in names:
            continue
        if o.is_bool:
            decls, kind = [f"{o.flag}/--no-{o.flag[2:]}", *([f" /{o.off_flag}"] if o.off_flag else []), o.name], {}
        else:
            decls = [o.flag, o.name]
            kind = {"type": click.Choice(o.choices) if o.choices else
                    {int: click.INT, float: click.FLOAT, str: click.STRING}.get(o.parse) or _FieldType(o),
                    "nargs": o.nargs or 1, "metavar": o.metavar}
        made.append(LazyHelpOption(decls, help_text=lambda o=o: _with_default(o), default=None,
                                   required=o.required or o.name in required, **kind))
    return made


def _with_default(option) -> str:
    shown = option.shown_default()
    return option.help_text() + (f"  [default: {shown}]" if shown is not None else "")


def given(values: dict) -> dict:
    """The options the user gave (field_options leaves the others None)."""
    return {k: v for k, v in values.items() if v is not None}


class FieldsCommand(click.Command):
    """A command whose options include a config dataclass's fields, made on first use: the config module is
    imported only when this command runs or shows its help."""

    def __init__(self, *args, fields, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields, self.made = fields, False

    def get_params(self, ctx):
        if not self.made:
            self.params[:0], self.made = self.fields(), True
        return super().get_params(ctx)


def _build_options() -> list:
    from ..build.config import BuildConfig

    return field_options(BuildConfig)


def _teacher_options() -> list:
    from ..build.config import BuildConfig
    from ..teacher.names import TEACHER_ARGS

    return field_options(BuildConfig, TEACHER_ARGS, required={"teacher"})


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="latentstore")
def cli():
    """Encode image datasets once with CompressAI codecs and store the exact latents.

    \b
    latentstore build --coder cheng2020 --quality 3 --dataset imagenet \\
        --root /data/imagenet --split train --variants 16 --out /stores/in1k-cheng2020-q3
    latentstore info /stores/in1k-cheng2020-q3
    """


@cli.command(cls=FieldsCommand, fields=_build_options)   # every BuildConfig field (latentstore/build/config.py)
@click.option("--profile", is_flag=True, help="Print the time per stage (decode, augment, g_a, hyper, "
                                              "autoregressive loop, rANS, teacher, write) at the end.")
@click.option("--dry-run", is_flag=True, help="Print the projected store size and encoding time (CPU-hours, from a "
                                              "timed batch on this machine) and exit; writes nothing.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build(quiet, dry_run, profile, **fields):
    """Encode a dataset split into a store of exact latents, symbols and bitstreams.

    Rerunning the same command after a crash finishes only what is missing.
    """
    from ..build.config import BuildConfig

    cfg = BuildConfig(**given(fields)).checked()   # at once: what follows imports the codec (seconds)
    if dry_run:
        from ..store.numerics import environment_matches

        if environment_matches(cfg.numerics) and not quiet:  # else the command reruns itself first
            click.echo("dry run: importing the codec (seconds), then timing a batch on this machine ...", err=True)
        from ..build.dryrun import project, render as render_projection
        click.echo(render_projection(project(cfg, say=(lambda line: None) if quiet else partial(click.echo, err=True))))
        return
    from ..build.run import build as run_build
    from ..build.timing import Profiler
    from .info import render, summarize

    profiler, started = Profiler(enabled=profile), time.perf_counter()
    if run_build(cfg, progress=not quiet, profiler=profiler) is None:
        i, n = cfg.part
        click.echo(f"part {i}/{n} of split {cfg.split!r} is complete; run `latentstore seal {cfg.out}` "
                   f"once all {n} parts are")
    else:
        click.echo(render(summarize(cfg.out)))
    if profile:
        click.echo("\nTime per stage (--profile):\n" + profiler.render(total=time.perf_counter() - started))


class StoreArg(click.ParamType):
    """A store folder that exists, or a store URL (s3://, gs://, https://, ...: latentstore/store/location.py)."""
    name = "STORE"

    def convert(self, value, param, ctx):
        from ..store.location import is_url
        return value if is_url(value) else click.Path(exists=True, file_okay=False).convert(value, param, ctx)


@cli.command()
@click.argument("store", type=StoreArg())
@click.option("--decode", default="0", show_default=True, metavar="N|all",
              help="Also decode N random samples (or all) with CompressAI's decompress() and compare ŷ "
                   "bit for bit (needs the coder's weights; runs at the store's torch thread count).")
@click.option("--weights", help="Where the coder's weights are now, if not where the manifest says.")
@click.option("--seed", default=0, show_default=True, type=int, help="Which random samples --decode picks.")
@click.option("--root", type=click.Path(file_okay=False),
              help="Where the dataset is now, if not at the root the manifest records (its records are compared "
                   "with the files there).")
@click.option("--no-sources", is_flag=True, help="Do not compare the store with its dataset.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify(store, decode, weights, seed, root, no_sources, quiet):
    """Check every shard (sha256, sample count, fields, keys) and that the store still matches its dataset;
    exit 1 naming every bad shard and key."""
    from .verify import verify as run_verify

    if decode != "all" and not decode.isdigit():
        raise click.BadParameter(f"{decode!r} is neither a number nor 'all'", param_hint="--decode")
    from ..store.location import is_url
    from ..store.remote import local_root

    checked, shown = store, str(store)
    with tempfile.TemporaryDirectory(prefix="latentstore-verify-") as scratch:
        if is_url(store):  # verify reads every byte: the whole store is downloaded as it is, then checked
            remote = local_root(store)[1]
            checked, shown = remote.download_all(Path(scratch)), remote.shown
        report = run_verify(checked, decode=sys.maxsize if decode == "all" else int(decode), seed=seed,
                            weights=weights, progress=not quiet, root=root, sources=not no_sources)
    for note in report.notes:
        click.echo(f"NOTE {note}".replace(str(checked), shown), err=True)
    for problem in report.problems:
        click.echo(f"BAD  {problem}".replace(str(checked), shown), err=True)
    click.echo(f"{report.shards} shards, {report.samples} samples checked, {report.decoded} decoded "
               f"by CompressAI: {'OK' if report.ok else f'{len(report.problems)} problem(s)'}")
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--coder", default="cheng2020", show_default=True, help="Coder whose latent (channels) the models take.")
@click.option("--quality", default=3, show_default=True, type=int)
@click.option("--image-size", default=224, show_default=True, type=int,
              help="Pixel size the latent comes from (latent side = size / 16).")
@click.option("--all", "count_all", is_flag=True, help="Count params and MACs of every named model "
                                                         "(builds each one: about half a minute).")
@click.option("--names-only", is_flag=True, help="Only list the names (what no NAMES and no --all do).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def models(names, coder, quality, image_size, count_all, names_only, quiet):
    """List the model names, or count params and MACs of NAMES (or --all) at a latent shape.

    \b
    latentstore models                                  # the names, at once
    latentstore models resnet50-aa cresnet51 --quality 5
    latentstore models --all                            # every named model, cheng2020 q3, 224 px
    """
    from ..models.names import EXAMPLES, model_names, name_listing  # no torch: the listing is instant

    if names_only or not (names or count_all):
        click.echo(name_listing())
        if not names_only:
            click.echo("\nParams and MACs: `latentstore models NAME ...`, or `--all` for every named model.")
        return
    from ..models.complexity import markdown_table, model_table

    if not names:
        patterns = [n for n in model_names() if "{timm}" in n]
        click.echo(f"Patterns ({{timm}} is any timm CNN): {', '.join(patterns)}\n")
    click.echo(markdown_table(model_table(names or EXAMPLES, coder=coder, quality=quality, image_size=image_size,
                                          progress=not quiet)))


@cli.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--format", "fmt", required=True, type=click.Choice(["webdataset", "zarr"]), help="Backend of DST.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def convert(src, dst, fmt, quiet):
    """Rewrite store SRC as a FORMAT store at DST, without re-encoding (reruns resume)."""
    from .convert import convert as run_convert
    from .info import render, summarize

    run_convert(src, dst, fmt, progress=not quiet)
    click.echo(render(summarize(dst)))


@cli.command("seal")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def seal_command(store, quiet):
    """Merge the part manifests of a partitioned build into manifest.json (fails naming missing parts)."""
    from ..store.seal import seal
    from .info import render, summarize

    seal(store, progress=not quiet)
    click.echo(render(summarize(store)))


@cli.command("fetch-weights")
@click.option("--coder", required=True, cls=LazyHelpOption, help_text=_coder_help)
@click.option("--quality", "qualities", required=True, multiple=True, type=int, help="Repeat for several.")
def fetch_weights(coder, qualities):
    """Download released coder weights into the torch hub cache ($TORCH_HOME), for offline nodes."""
    from ..coders.registry import load_coder

    for quality in qualities:
        loaded = load_coder(coder, quality, "pretrained")
        click.echo(f"{loaded.spec.name} q{quality}: cached, sha256 {loaded.weights['sha256']}")


@cli.command()
@click.argument("store", type=StoreArg())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@click.option("--teacher-error", default=0, type=int, metavar="N",
              help="Also measure each teacher dtype's relative error vs float32 on N samples (runs the teacher).")
@click.option("--keys", "list_keys", is_flag=True,
              help="List every sample key instead (one per line, split by split in stored order; "
                   "open_store(...)[key] reads one).")
def info(store, as_json, teacher_error, list_keys):
    """Summarize a store: coder, weights, samples, bpp, bytes per field, teacher, rejects."""
    from .info import render, store_keys, summarize

    if list_keys:
        keys = store_keys(store)
        click.echo(json.dumps(keys, indent=1) if as_json else "\n".join(k for split in keys.values() for k in split))
        return
    summary = summarize(store)
    if teacher_error:
        from .add_teacher import teacher_error as measure
        summary["teacher_error"] = measure(store, teacher_error)
    click.echo(json.dumps(summary, indent=1) if as_json else render(summary))


@cli.command("copy")
@click.argument("src", type=StoreArg())
@click.argument("dst")
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(min=1),
              help="Files copied at a time; fewer where a store's largest files would hold more than 4 GiB in "
                   "memory (each is held twice while it is read back).")
@click.option("--quiet", is_flag=True, help="No per-file lines.")
def copy_command(src, dst, jobs, quiet):
    """Copy store SRC to DST (folders or URLs: s3://bucket/prefix, gs://, ...), each file's digest checked on
    arrival; rerun to resume (files already there with the right digest are skipped); manifest.json last.

    Credentials come from the backend's usual places (environment, config files); an S3-compatible
    service is reached through AWS_ENDPOINT_URL."""
    from .copy import copy_store

    done = copy_store(src, dst, jobs=jobs,
                      progress=None if quiet else lambda rel, what: click.echo(f"{what:8} {rel}"))
    click.echo(f"{done['copied']} file(s) copied ({done['bytes']:,} bytes), {done['skipped']} already present")


@cli.command("add-teacher", cls=FieldsCommand, fields=_teacher_options)   # BuildConfig's --teacher* fields
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--split", "splits", multiple=True, help="Only this split (repeat for several); default all.")
@click.option("--trust-sources", is_flag=True,
              help="Skip re-running the coder's g_a to prove each replayed crop is the encoded one.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def add_teacher(store, splits, trust_sources, quiet, **teacher):
    """Add teacher features to an existing store, replaying each sample's stored augmentation.

    Latent members keep their bytes: a tar store then equals a build with --teacher
    byte for byte, a Zarr store sample for sample (its new arrays keep its chunking).
    """
    from .add_teacher import add_teacher as run
    from .info import render, summarize

    from ..build.config import BuildConfig

    t = {**{name: BuildConfig.__dataclass_fields__[name].default for name in teacher}, **given(teacher)}
    run(store, t["teacher"], t["teacher_weights"], t["teacher_strides"], t["teacher_layers"], t["teacher_dtype"],
        splits=list(splits) or None, verify_sources=not trust_sources, progress=not quiet)
    click.echo(render(summarize(store)))


def main(argv=None):
    """Console entry point: user errors print one clear message and exit 2, not a traceback."""
    from ..store.numerics import WrongNumerics

    try:
        cli.main(args=argv, prog_name="latentstore", standalone_mode=False)
    except WrongNumerics as wrong:
        if os.environ.get(RERUN_MARK):  # the rerun did not get its numerics: say so, do not loop
            click.echo(f"Error: {wrong}", err=True)
            sys.exit(2)
        status = _rerun(argv, wrong.environment())
        if status:
            sys.exit(status)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LatentstoreError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS:
            raise
        click.echo(f"Error: {STORAGE_ERRORS[exc.errno]} writing {exc.filename or 'the store'}. Nothing partial "
                   "was committed: free space (or fix the permissions, or pick another --out) and rerun the "
                   "same command; it resumes where it stopped.", err=True)
        sys.exit(3)


RERUN_MARK = "LATENTSTORE_NUMERICS_RERUN"


def _rerun(argv, env: dict) -> int:
    """Run this command again in a fresh interpreter with `env`: the numeric libraries read their
    dispatch variables when they first run, so a process cannot switch once torch has computed."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command, env = [sys.executable, "-m", "latentstore", *args], {**env, RERUN_MARK: "1"}
    if argv is None:  # the console command itself: become the rerun (same pid for schedulers and signals)
        sys.stdout.flush()
        os.execve(sys.executable, command, env)
    child = subprocess.Popen(command, env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:  # the terminal sent it to the child too: let it stop as it does
        return child.wait()


if __name__ == "__main__":
    main()
