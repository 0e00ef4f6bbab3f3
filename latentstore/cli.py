"""The `latentstore` command line. Each command is a thin wrapper over a library function."""
from __future__ import annotations

import json
import sys
import warnings

import click

from .coders import ALIASES, CODERS
from .errors import LatentstoreError
from .format import OPTIONAL_FIELDS

# torch 2.14 deprecates torch.jit.script, which CompressAI calls at import; not actionable for users.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

CODER_HELP = "CompressAI coder: " + ", ".join(list(CODERS) + [f"{a} (= {c})" for a, c in ALIASES.items()])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="latentstore")
def cli():
    """Encode image datasets once with CompressAI codecs and store the exact latents.

    \b
    latentstore build --coder cheng2020 --quality 3 --dataset imagenet \\
        --root /data/imagenet --split train --variants 16 --out /stores/in1k-cheng2020-q3
    latentstore info /stores/in1k-cheng2020-q3
    """


@cli.command()
@click.option("--coder", required=True, help=CODER_HELP)
@click.option("--quality", required=True, type=int, help="Codec quality (1-8 for bmshj2018/mbt2018, 1-6 for cheng2020).")
@click.option("--weights", default="pretrained", show_default=True,
              help="'pretrained' (zoo weights via the TORCH_HOME cache), a CompressAI checkpoint PATH, "
                   "or 'untrained' (seeded random weights, for demos and tests only).")
@click.option("--dataset", required=True, type=click.Choice(["imagenet", "imagefolder"]),
              help="imagenet: <root>/<split>/<synset>/*.JPEG (val may be flat + label file); "
                   "imagefolder: any <root>/<split>/<class>/* tree.")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset root folder.")
@click.option("--split", default="train", show_default=True, help="Split folder under the root.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Store folder (created; reruns resume).")
@click.option("--variants", default=1, show_default=True, type=int,
              help="Augmentation variants per image (epoch e of training reads variant e mod K).")
@click.option("--augment", type=click.Choice(["train", "val"]),
              help="train: RandomResizedCrop + flip; val: resize + center crop. Default: train for the train split.")
@click.option("--seed", default=0, show_default=True, type=int, help="Augmentation seed (and untrained weights' seed).")
@click.option("--crop", default=224, show_default=True, type=int, help="Crop size in pixels (padded to a multiple of 64).")
@click.option("--resize", default=256, show_default=True, type=int, help="Val: shorter side before the center crop.")
@click.option("--limit", type=int, help="Use N images: a deterministic round-robin across classes (nested: N is within N+1).")
@click.option("--label-file", type=click.Path(exists=True, dir_okay=False), help="Labels for a flat ImageNet val folder.")
@click.option("--shard-size", default=1000, show_default=True, type=int, help="Source images per shard.")
@click.option("--y-hat-dtype", default="float16", show_default=True, type=click.Choice(["float16", "float32"]))
@click.option("--fields", default="", help=f"Extra fields, comma separated: {', '.join(OPTIONAL_FIELDS)}.")
@click.option("--max-rejects", default=100, show_default=True, type=int,
              help="Fail once more than this many images are unreadable.")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Images per encoder batch (speed only).")
@click.option("--workers", default=0, show_default=True, type=int, help="Decode/augment processes (speed only).")
@click.option("--part", help="Build only part i/N of the split (e.g. 3/64), or 'auto' from SLURM_ARRAY_TASK_ID/"
                             "SLURM_ARRAY_TASK_COUNT or RANK/WORLD_SIZE; then run `latentstore seal`.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build(quiet, fields, part, **kwargs):
    """Encode a dataset split into a store of exact latents, symbols and bitstreams.

    Rerunning the same command after a crash finishes only what is missing.
    """
    from .build import BuildConfig, build as run_build
    from .info import render, summarize
    from .seal import parse_part

    cfg = BuildConfig(fields=tuple(f for f in fields.split(",") if f), part=parse_part(part), **kwargs)
    if run_build(cfg, progress=not quiet) is None:
        i, n = cfg.part
        click.echo(f"part {i}/{n} of split {cfg.split!r} is complete; run `latentstore seal {cfg.out}` "
                   f"once all {n} parts are")
    else:
        click.echo(render(summarize(cfg.out)))


@cli.command("seal")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
def seal_command(store):
    """Merge the part manifests of a partitioned build into manifest.json (fails naming missing parts)."""
    from .info import render, summarize
    from .seal import seal

    seal(store)
    click.echo(render(summarize(store)))


@cli.command("fetch-weights")
@click.option("--coder", required=True, help=CODER_HELP)
@click.option("--quality", "qualities", required=True, multiple=True, type=int, help="Repeat for several.")
def fetch_weights(coder, qualities):
    """Download released coder weights into the torch hub cache ($TORCH_HOME), for offline nodes."""
    from .coders import load_coder

    for quality in qualities:
        loaded = load_coder(coder, quality, "pretrained")
        click.echo(f"{loaded.spec.name} q{quality}: cached, sha256 {loaded.weights['sha256']}")


@cli.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def info(store, as_json):
    """Summarize a store: coder, weights, samples, bpp, bytes per field, rejects."""
    from .info import render, summarize

    summary = summarize(store)
    click.echo(json.dumps(summary, indent=1) if as_json else render(summary))


def main(argv=None):
    """Console entry point: user errors print one clear message and exit 2, not a traceback."""
    try:
        cli.main(args=argv, prog_name="latentstore", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LatentstoreError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
