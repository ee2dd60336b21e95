"""MONAI Label integration: volgan bundles served by a MONAI Label app (the template is ``template/`` beside this file).

MONAI Label's stock ``BundleInferTask`` treats every bundle as a segmentation model. Here:

* **synthesis bundles** (the output in ``metadata.json`` is an image, not a ``segmentation``: MM-GAN label map ->
  MRI, CT <-> MRI translation) are registered as ``InferType.OTHERS`` image-producing models: float32 output,
  no label list, and no nearest-neighbour "restore" step (their preprocessing does not resample, so the
  output already has the input's grid; sliding-window inference pads and crops internally);
* **segmentation bundles** (the 2D slice-wise segmentors trained on real + synthetic data) use the stock
  ``BundleInferTask`` unchanged;
* training goes through ``VolganBundleTrainTask``, which maps MONAI Label's overrides onto the bundle interface
  of every volgan bundle (``dataset_dir``, ``val_dataset_dir``, ``max_epochs``, ``output_dir``, ``device``)
  and runs the bundle's ``initialize`` section (the stock task skips it, and volgan bundles attach their
  handlers there).

This module imports ``monailabel`` and is only used inside a MONAI Label environment (see README,
"Use it with MONAI Label"). The server binds to 127.0.0.1 unless told otherwise (``volgan.apps.monailabel.app.serve``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from volgan.bundle import bundle_path
from volgan.errors import VolganConfigError

__all__ = [
    "bundle_kind",
    "parse_bundle_specs",
    "serve",
    "discover_bundles",
    "prepare_app",
    "serve_command",
    "APP_TEMPLATE",
    "TRAIN_PARAMS",
    "MONAILABEL_TRAIN_KEYS",
    "check_train_request",
    "serve_env",
]

APP_TEMPLATE = Path(__file__).resolve().parent / "template"
# bundle ids a /train/ request may set (besides MONAI Label's own max_epochs, device, val_split, pretrained)
TRAIN_PARAMS = ("gan_iterations", "ratio", "augment", "image_size", "val_interval", "patience_iterations",
                "slice_axis", "empty_fraction", "seed", "amp", "log_interval", "n_critic", "mode", "stage1_epochs",
                "stage2_epochs", "batch_size")


#: the keys MONAI Label itself puts into a /train/ request (its task options, the model, where the bundle is)
MONAILABEL_TRAIN_KEYS = ("device", "pretrained", "max_epochs", "val_split", "multi_gpu", "force_multi_gpu", "gpus",
                         "tracking", "tracking_uri", "tracking_experiment_name", "tracking_run_name", "run_id",
                         "model_filename", "model", "bundle_path", "client_id")
_CONFIG_PREFIXES = ("$", "@", "%")  # what MONAI's config parser would evaluate, reference or import
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _reject_config_syntax(key: str, value: Any) -> None:
    if isinstance(value, str) and value.lstrip().startswith(_CONFIG_PREFIXES):
        raise VolganConfigError(f"/train/ parameter {key!r}: a value starting with '$', '@' or '%' would be run by "
                                "the bundle's config parser; give plain data (numbers, booleans, text, lists)")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _reject_config_syntax(f"{key}.{k}", k)
            _reject_config_syntax(f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _reject_config_syntax(key, v)
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise VolganConfigError(f"/train/ parameter {key!r}: {type(value).__name__} is not plain data")


def _matches(value: Any, default: Any) -> bool:
    """Whether a request value has the type of the bundle's declared default (an int default takes an int, a float
    one a number, a bool one a bool, a text one text, a list one a list of plain values)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, (int, float, str, bool)) for v in value)
    return default is None and isinstance(value, (int, float, str, bool, list))


def check_train_request(request: Mapping[str, Any], bundle_config: Mapping[str, Any]) -> dict[str, Any]:
    """A MONAI Label ``/train/<bundle>`` request as data only, before anything of it reaches a bundle config: no key
    outside MONAI Label's own (``MONAILABEL_TRAIN_KEYS``) and the bundle ids it may set (``TRAIN_PARAMS`` the
    bundle declares); no string anywhere that MONAI's parser would evaluate (``$``, ``@``, ``%``); bundle ids of
    the type of the bundle's default; ``max_epochs`` a positive integer, ``device`` cpu or cuda[:N], file names
    plain. Returns the request; the first problem is one ``VolganConfigError`` line."""
    req = dict(request)
    allowed = set(MONAILABEL_TRAIN_KEYS) | {k for k in TRAIN_PARAMS if k in bundle_config}
    unknown = sorted(k for k in req if k not in allowed)
    if unknown:
        raise VolganConfigError(f"/train/ request has unknown parameter(s) {unknown}; this bundle takes "
                                f"{sorted(allowed - {'model', 'bundle_path', 'client_id'})}")
    for key, value in req.items():
        _reject_config_syntax(key, value)
        if key in TRAIN_PARAMS:
            default = bundle_config[key]
            if isinstance(default, str) and default.startswith(_CONFIG_PREFIXES):
                default = None  # a derived default: any plain value of the usual kinds
            if not _matches(value, default):
                raise VolganConfigError(f"/train/ parameter {key!r} must be like the bundle's {bundle_config[key]!r}, "
                                        f"got {value!r}")
    if "max_epochs" in req and not (isinstance(req["max_epochs"], int) and not isinstance(req["max_epochs"], bool)
                                    and req["max_epochs"] > 0):
        raise VolganConfigError(f"/train/ parameter 'max_epochs' must be a positive integer, got {req['max_epochs']!r}")
    devices = req.get("device", "cpu")
    for d in devices if isinstance(devices, list) else [devices]:
        if not isinstance(d, str) or not _DEVICE.match(d):
            raise VolganConfigError(f"/train/ parameter 'device' must be cpu or cuda[:N], got {d!r}")
    for key in ("run_id", "model_filename"):
        names = req.get(key) or []
        for n in names if isinstance(names, list) else [names]:
            if not isinstance(n, str) or not _SAFE_NAME.match(n):
                raise VolganConfigError(f"/train/ parameter {key!r} must be a plain name, got {n!r}")
    return req


def _metadata(bundle_dir: Path) -> dict:
    path = bundle_dir / "configs" / "metadata.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VolganConfigError(f"{path}: missing (a MONAI bundle needs configs/metadata.json)") from None
    except json.JSONDecodeError as e:
        raise VolganConfigError(f"{path}: not valid JSON ({e})") from None


def bundle_kind(bundle_dir: str | os.PathLike) -> str:
    """``"segmentation"`` or ``"synthesis"``, from the format of the first output in ``metadata.json``."""
    meta = _metadata(Path(bundle_dir))
    try:
        out = next(iter(meta["network_data_format"]["outputs"].values()))
    except (KeyError, StopIteration):
        raise VolganConfigError(f"{bundle_dir}: metadata.json has no network_data_format.outputs") from None
    return "segmentation" if str(out.get("format", "")).lower() == "segmentation" else "synthesis"


def discover_bundles(model_dir: str | os.PathLike, names: str | Sequence[str] | None = None) -> dict[str, str]:
    """Bundle folders under ``model_dir`` (each with ``configs/inference.*`` and ``configs/metadata.json``).

    ``names``: ``None``/``"all"`` for every bundle found, or a comma-separated string / list of folder names.
    """
    root = Path(model_dir)
    found = {p.name: str(p) for p in sorted(root.iterdir()) if p.is_dir()
             and (p / "configs" / "metadata.json").is_file()
             and any((p / "configs" / f"inference.{e}").is_file() for e in ("yaml", "json"))} if root.is_dir() else {}
    if names is None or names == "all":
        if not found:
            raise VolganConfigError(f"{root}: no bundles (folders with configs/inference.yaml and metadata.json)")
        return found
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    missing = [n for n in wanted if n not in found]
    if missing:
        raise VolganConfigError(f"{root}: no bundle folder for {missing}; found {sorted(found)}")
    return {n: found[n] for n in wanted}


def parse_bundle_specs(specs: Sequence[str]) -> tuple[dict[str, Path], dict[str, Path]]:
    """``["mmgan_label2mri_3d=OUT/model.pt", "wgan_pairs_seg_2d"]`` -> (bundle folders, weights) using
    ``volgan.bundle.bundle_path`` (``$VOLGAN_BUNDLES`` or the checkout's ``bundles/``)."""
    folders, weights = {}, {}
    for spec in specs:
        name, _, w = spec.partition("=")
        folders[name] = bundle_path(name)
        if w:
            weights[name] = Path(w)
    return folders, weights


def prepare_app(app_dir: str | os.PathLike, bundles: Mapping[str, str | os.PathLike],
                weights: Mapping[str, str | os.PathLike] | None = None, overwrite: bool = False) -> Path:
    """Write a MONAI Label app folder: ``main.py`` from the app template and ``model/<name>/`` per bundle.

    Args:
        bundles: name -> bundle folder (``configs/`` is copied; ``docs/`` too when present).
        weights: name -> trained weights (a state dict as volgan bundles write it), copied to
            ``model/<name>/models/model.pt``. A bundle without weights keeps whatever its ``models/`` holds.
    """
    app = Path(app_dir)
    if app.exists() and any(app.iterdir()):
        if not overwrite:
            raise VolganConfigError(f"{app}: exists and is not empty (pass overwrite=True to replace it)")
        shutil.rmtree(app)
    (app / "model").mkdir(parents=True, exist_ok=True)
    for f in ("main.py", "README.md"):
        shutil.copy2(APP_TEMPLATE / f, app / f)
    for name, src in bundles.items():
        src = Path(src)
        if not (src / "configs").is_dir():
            raise VolganConfigError(f"{src}: not a bundle folder (no configs/)")
        dst = app / "model" / name
        shutil.copytree(src / "configs", dst / "configs")
        if (src / "docs").is_dir():
            shutil.copytree(src / "docs", dst / "docs")
        (dst / "models").mkdir(parents=True, exist_ok=True)
        if (src / "models" / "model.pt").is_file():
            shutil.copy2(src / "models" / "model.pt", dst / "models" / "model.pt")
        w = (weights or {}).get(name)
        if w is not None:
            if not Path(w).is_file():
                raise VolganConfigError(f"{w}: weights for bundle {name!r} not found")
            shutil.copy2(w, dst / "models" / "model.pt")
    return app


def serve_command(app_dir: str | os.PathLike, studies: str | os.PathLike, port: int = 8000,
                  host: str = "127.0.0.1", models: str | Sequence[str] = "all", python: str | None = None,
                  extra_conf: Mapping[str, str] | None = None) -> list[str]:
    """The ``monailabel start_server`` command for an app made by ``prepare_app`` (through
    ``volgan.apps.monailabel.start_server``, which makes MONAI Label's CORS allow-list work): offline
    (``zoo_source local``, ``sam2 false``) and bound to 127.0.0.1 by default (pass ``host="0.0.0.0"`` deliberately
    to expose it). Run it with ``serve_env``'s environment."""
    models = models if isinstance(models, str) else ",".join(models)
    cmd = [python or sys.executable, "-m", "volgan.apps.monailabel.start_server", "--app", str(app_dir),
           "--studies", str(studies), "--host", host, "--port", str(int(port)),
           "--conf", "models", models, "--conf", "zoo_source", "local", "--conf", "sam2", "false"]
    for k, v in (extra_conf or {}).items():
        cmd += ["--conf", str(k), str(v)]
    return cmd


def serve_env(host: str = "127.0.0.1", port: int = 8000, cors_origins: Sequence[str] = ()) -> dict[str, str]:
    """Environment of the MONAI Label server process: CORS limited to the server's own origin and
    ``cors_origins`` (a viewer served elsewhere, e.g. OHIF), instead of MONAI Label's default of any origin (which
    lets any web page in a local browser send requests to the server)."""
    own = {f"http://{h}:{int(port)}" for h in {host, "127.0.0.1", "localhost"} if h not in ("0.0.0.0", "::")}
    return {"MONAI_LABEL_CORS_ORIGINS": json.dumps(sorted(own | set(cors_origins)))}


def serve(app_dir: str | os.PathLike, studies: str | os.PathLike, cors_origins: Sequence[str] = (),
          **kwargs: Any) -> int:
    """Run the server in the foreground (what ``volgan label-app --serve`` does); returns its exit status."""
    env = dict(os.environ, **serve_env(kwargs.get("host", "127.0.0.1"), kwargs.get("port", 8000), cors_origins))
    return subprocess.call(serve_command(app_dir, studies, **kwargs), env=env)


def _label_app_command(args: Any) -> int:
    folders, weights = parse_bundle_specs(args.bundle)
    app = prepare_app(args.app_dir, folders, weights, overwrite=args.overwrite)
    print(app)
    if not args.serve:
        return 0
    if not args.studies:
        raise VolganConfigError("--serve needs --studies: the folder of images MONAI Label serves")
    python = args.python or os.environ.get("VOLGAN_MONAILABEL_PYTHON") or sys.executable
    return serve(app, args.studies, cors_origins=args.cors_origin or (), port=args.port, host=args.host,
                 python=python)


def add_cli(sub: Any) -> None:
    """``volgan label-app``: write a MONAI Label app for some bundles and (``--serve``) start it on 127.0.0.1."""
    p = sub.add_parser("label-app", help="MONAI Label app for volgan bundles (and --serve to start it on 127.0.0.1)")
    p.add_argument("app_dir", help="folder to write (main.py + model/<bundle>/)")
    p.add_argument("--bundle", action="append", required=True, metavar="NAME[=WEIGHTS]",
                   help="a bundle to serve, with its trained model.pt (repeat for several)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty app_dir")
    p.add_argument("--serve", action="store_true", help="start monailabel start_server on the app (offline)")
    p.add_argument("--studies", help="images for the MONAI Label datastore (with --serve)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--cors-origin", action="append", metavar="URL",
                   help="a web origin allowed to call the server besides its own (e.g. an OHIF viewer); repeatable")
    p.add_argument("--python", help="python of the MONAI Label environment (default $VOLGAN_MONAILABEL_PYTHON or this one)")
    p.set_defaults(func=_label_app_command)
