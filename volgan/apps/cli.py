"""``volgan`` command line: thin wrappers over the API and the bundles."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from volgan.apps.demo import run_demo
from volgan.bundle import bundle_names, bundle_path, export_bundle
from volgan.apps.monailabel.app import add_cli as add_label_app
from volgan.apps.nnunet import export_nnunet
from volgan.data import datalist_problems, find_brain_mask, label_convention, load_datalist, stored_label_values
from volgan.errors import VolganConfigError, find_cause, find_volgan_error
from volgan.evaluation import METHODS, evaluate_bundle
from volgan.evaluation.distribution import distribution_metrics, quality_report
from volgan.synthesis import synthesize

__all__ = ["main", "build_parser"]


def _demo(args: argparse.Namespace) -> int:
    run_demo(args.output_dir, quick=args.quick, device=args.device, seed=args.seed, overwrite=args.overwrite)
    return 0


def _synthesize(args: argparse.Namespace) -> int:
    extra = {"perturb": args.perturb, "seed": args.seed, "overwrite": args.overwrite, "device": args.device}
    if args.roi_size:
        extra["roi_size"] = args.roi_size
    if args.brain_as_label:
        extra["brain_as_label"] = True
    if args.brain_mask:
        extra["brain_mask"] = args.brain_mask
    path = synthesize(args.input, args.ckpt_path, args.output_dir, bundle=args.bundle, **extra)
    print(path)
    return 0


def _check_data(args: argparse.Namespace) -> int:
    """Every problem of every file, one line each (exit status 2), or the count of valid pairs; with ``--bundle``
    also against that bundle's label convention (its metadata.json), with the options the bundle run would get."""
    items = load_datalist(args.dataset)
    values, conv = args.label_values, None
    if args.bundle:
        conv = label_convention(args.bundle)
        values = values or (list(conv.label_values) if conv.label_values else None)
        conv = conv if conv.required_values(values) else None
        if values is not None:
            values = stored_label_values(values, None, args.brain_as_label, args.brain_mask)
        if args.brain_mask:
            items = [{**it, "brain_mask": find_brain_mask(args.brain_mask, it["label"])} for it in items]
    problems = datalist_problems(items, label_values=values, spatial_dims=args.spatial_dims, convention=conv,
                                 brain_added=args.brain_as_label)
    for p in problems:
        print(f"volgan: error: {p}", file=sys.stderr)
    if problems:
        return 2
    print(f"{args.dataset}: {len(items)} valid (image, label) pairs")
    return 0


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``ID=VALUE`` pairs -> bundle overrides, each value read as YAML (numbers, lists, mappings, strings)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise VolganConfigError(f"--set {pair!r}: expected ID=VALUE, e.g. gan_batch_size=4")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise VolganConfigError(f"--set {pair!r}: the value is not YAML ({str(e).splitlines()[0]})") from e
    return out


def _evaluate(args: argparse.Namespace) -> int:
    kw = {"settings": args.settings} if args.settings else {}
    if args.dataset_b or args.test_b:
        kw.update(dataset_b=args.dataset_b, test_b=args.test_b)
    if args.iterations:
        kw["iterations"] = args.iterations
    ckpt = args.ckpt_path[0] if args.ckpt_path and len(args.ckpt_path) == 1 else args.ckpt_path
    res = evaluate_bundle(args.bundle, args.dataset, args.output_dir, ckpt_path=ckpt, test=args.test,
                          test_fraction=args.test_fraction, seeds=args.seeds,
                          copies=args.copies,
                          device=args.device, quick=args.quick, sizes=args.sizes, budget=args.budget,
                          overrides=parse_overrides(args.set or []), **kw)
    print(res["table"])
    return 0


def _quality(args: argparse.Namespace) -> int:
    out = args.output_dir or (args.synthetic if os.path.isdir(args.synthetic) else os.path.dirname(args.synthetic) or ".")
    res = distribution_metrics(args.real, args.synthetic, segmentor=args.segmentor, label_values=args.label_values,
                               radiomics=not args.no_radiomics, seed=args.seed, spatial_dims=args.spatial_dims)
    print(quality_report(res, out))
    print(f"features: {res['features']}; radiomics: {res['radiomics']}; {res['n_synthetic']} synthetic vs "
          f"{res['n_real']} real\n{os.path.join(out, 'quality_metrics.png')}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    if args.action == "path":
        print(bundle_path(args.name))
    elif args.action == "list":
        print("\n".join(bundle_names()))
    else:
        if not args.output_dir:
            raise VolganConfigError("volgan bundle export NAME --output-dir DIR [--ckpt-path RUN/model.pt]")
        print(export_bundle(args.name, args.output_dir, args.ckpt_path, args.overwrite))
    return 0


def _export_nnunet(args: argparse.Namespace) -> int:
    out = args.output_dir or os.environ.get("nnUNet_raw")
    if not out:
        raise VolganConfigError("no output folder: pass --output-dir or set nnUNet_raw")
    path = export_nnunet(args.real, out, args.dataset_id, args.name, synthetic=args.synthetic, labels=args.labels,
                         channel_names=args.channel_names, test=args.test, overwrite=args.overwrite,
                         spatial_dims=args.spatial_dims, splits=not args.no_splits)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="volgan", description="GAN-based synthesis of medical images (MONAI bundles)")
    p.add_argument("--verbose", "-v", action="store_true", help="show full tracebacks and INFO logs")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="MM-GAN end to end on the embedded sample data (a few minutes on a CPU)")
    d.add_argument("--output-dir", default="volgan-demo")
    d.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    d.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu: the demo is sized for it)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true", help="replace a non-demo folder at --output-dir")
    d.set_defaults(func=_demo)

    s = sub.add_parser("synthesize", help="synthesise volumes from label maps with a trained generator")
    s.add_argument("input", help="label map file, folder or datalist JSON")
    s.add_argument("--ckpt-path", required=True)
    s.add_argument("--output-dir", required=True)
    s.add_argument("--bundle", default="mmgan_label2mri_3d")
    s.add_argument("--perturb", action="store_true", help="perturb the lesion first (augmentation workflow)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--roi-size", type=int, nargs="+")
    s.add_argument("--device", default="auto")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--brain-as-label", action="store_true", help="label maps without the brain label 3: add it from "
                   "each image's head mask, as training does (INPUT must then be (image, label) pairs)")
    s.add_argument("--brain-mask", help="label maps without the brain label 3: a brain mask file or a folder of "
                   "<case>_brain_mask files")
    s.set_defaults(func=_synthesize)

    e = sub.add_parser("evaluate", help="segmentation with vs without synthetic data: the settings the papers compare")
    e.add_argument("--bundle", required=True, choices=sorted(METHODS), help="the method to evaluate")
    e.add_argument("--dataset", required=True, help="real (image, label) pairs: folder or datalist JSON "
                   "(cycleshape_ct_mri_3d: domain A)")
    e.add_argument("--dataset-b", help="cycleshape_ct_mri_3d: the unpaired domain B (image, label) pairs")
    e.add_argument("--test-b", help="cycleshape_ct_mri_3d: held-out domain B pairs (default: a split of --dataset-b)")
    e.add_argument("--output-dir", required=True)
    e.add_argument("--ckpt-path", nargs="+", help="trained generator (mmgan_label2mri_3d); one per --seeds entry "
                   "to resample the GAN as well as the segmentor")
    e.add_argument("--test", help="held-out pairs (default: a split of --dataset by case)")
    e.add_argument("--test-fraction", type=float, default=0.25)
    e.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (--quick: 0); a setting is called better "
                   "or worse only from at least two seeds")
    e.add_argument("--copies", type=int, default=5, help="synthetic copies per training label map (mmgan)")
    e.add_argument("--settings", nargs="+", help="a subset of the bundle's settings")
    e.add_argument("--iterations", type=int, help="segmentor iterations per setting (mmgan)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    e.add_argument("--budget", type=float, help="a fraction of the paper's training budget (e.g. 0.05): between "
                   "--quick and the full budget")
    e.add_argument("--sizes", type=int, nargs="+", help="learning curve: train on the first k cases for each k "
                   "(e.g. 1 2 4 8); mmgan trains one generator per size and seed")
    e.add_argument("--set", nargs="+", metavar="ID=VALUE", help="bundle ids for every training run, values in YAML "
                   "(e.g. label_map_a=\"{1: 1, 5: 2}\" for cycleshape_ct_mri_3d, gan_batch_size=4)")
    e.set_defaults(func=_evaluate)

    c = sub.add_parser("check-data", help="validate a datalist or folder of (image, label) pairs")
    c.add_argument("dataset")
    c.add_argument("--label-values", type=int, nargs="+")
    c.add_argument("--spatial-dims", type=int, default=3)
    c.add_argument("--bundle", help="a bundle name (volgan bundle list): also check the label maps against this bundle's label "
                   "convention (configs/metadata.json), e.g. MM-GAN's 3 = rest of the brain")
    c.add_argument("--brain-as-label", action="store_true", help="with --bundle mmgan_label2mri_3d: the run adds "
                   "label 3 from a head mask of the image (train with --brain_as_label true)")
    c.add_argument("--brain-mask", help="with --bundle mmgan_label2mri_3d: a brain mask file or a folder of "
                   "<case>_brain_mask files that the run adds as label 3 (train with --brain_mask)")
    c.set_defaults(func=_check_data)

    b = sub.add_parser("bundle", help="the installed bundles: list, path NAME (for python -m monai.bundle run "
                       "--config_file PATH/configs/train.yaml), export NAME --output-dir DIR (a model-zoo layout)")
    b.add_argument("action", choices=("list", "path", "export"))
    b.add_argument("name", nargs="?", default="mmgan_label2mri_3d")
    b.add_argument("--output-dir", help="export: the folder the bundle folder goes into")
    b.add_argument("--ckpt-path", help="export: a training run's model.pt, written as models/model.pt")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=_bundle)

    q = sub.add_parser("quality", help="how far a synthetic set is from the real one: 2.5D FID / MMD, MS-SSIM "
                       "diversity, radiomics FRD (offline feature extractors)")
    q.add_argument("real", help="real (image, label) pairs: folder or datalist JSON")
    q.add_argument("synthetic", help="synthetic pairs: a 'volgan synthesize' output folder, folder or datalist JSON")
    q.add_argument("--output-dir", help="where quality_metrics.{json,md,png} go (default: the synthetic folder)")
    q.add_argument("--segmentor", help="a 2D segmentor model.pt (with model.json) trained on the real data: its "
                   "encoder embeds the slices (default: a seeded random-weight CNN)")
    q.add_argument("--label-values", type=int, nargs="+")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--no-radiomics", action="store_true", help="skip FRD (radiomics features are the slow part)")
    q.add_argument("--spatial-dims", type=int, default=3, help="2: 2D images (the 2D methods' slices)")
    q.set_defaults(func=_quality)

    x = sub.add_parser("export-nnunet", help="write real + synthetic (image, label) pairs as an nnU-Net v2 raw dataset")
    x.add_argument("--real", required=True, help="real (image, label) pairs: folder or datalist JSON")
    x.add_argument("--synthetic", help="synthetic pairs: a 'volgan synthesize' output folder, folder or datalist JSON")
    x.add_argument("--test", help="held-out cases for imagesTs (their labels, if any, go to labelsTs)")
    x.add_argument("--output-dir", help="the nnUNet_raw folder (default: $nnUNet_raw)")
    x.add_argument("--dataset-id", required=True, help="nnU-Net dataset id, 1..999")
    x.add_argument("--name", required=True, help="dataset name: the folder is DatasetXXX_NAME")
    x.add_argument("--labels", nargs="+", metavar="NAME=VALUE", help="label names and their values in the label "
                   "maps, e.g. background=0 necrosis=1 oedema=2 enhancing=4 (default: the real datalist's labels, "
                   "else the values found); non-consecutive values are mapped to 0, 1, 2, ...")
    x.add_argument("--channel-names", nargs="+", help="one name per image channel, e.g. T1 or CT (CT selects "
                   "nnU-Net's CT normalisation)")
    x.add_argument("--spatial-dims", type=int, default=3)
    x.add_argument("--no-splits", action="store_true", help="do not write splits_final.json")
    x.add_argument("--overwrite", action="store_true", help="replace an existing DatasetXXX_NAME folder")
    x.set_defaults(func=_export_nnunet)

    add_label_app(sub)
    return p


def _safe_streams() -> None:
    """Paths may hold characters the console cannot encode (unicode paths on an ASCII/latin-1 terminal): print
    them escaped instead of failing with a UnicodeEncodeError after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (e.g. a StringIO), or closed
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a ``VolganError`` prints one line ``volgan: error: <file>: <problem>`` and exits 2."""
    _safe_streams()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # noqa: BLE001
        err = find_volgan_error(e)
        if err is not None and not args.verbose:
            print(f"volgan: error: {err}", file=sys.stderr)
            return 2
        os_err = find_cause(e, OSError)
        if os_err is not None and os_err.strerror and not args.verbose:  # the machine, not the input: a full disk
            where = f"{os_err.filename}: " if os_err.filename else ""
            print(f"volgan: error: {where}{os_err.strerror} (--verbose shows the traceback)", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
