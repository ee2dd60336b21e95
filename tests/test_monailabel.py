"""MONAI Label: every bundle satisfies the contract MONAI Label and MONAI's InferProperties read, and a real
``monailabel start_server`` (in its own venv, built by ``tools/monailabel_venv.sh``) serves all five bundles:
``/info/``, ``/infer/<bundle>`` for each (NIfTI shape and affine as the input's), ``/train/`` for a segmentor."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.conftest import BUNDLES, tiny_case, tools_venv_python
from volgan.errors import VolganConfigError
from volgan.apps.monailabel.app import (
    bundle_kind,
    check_train_request,
    discover_bundles,
    prepare_app,
    serve_command,
    serve_env,
)

ALL = ("mmgan_label2mri_3d", "cycleshape_ct_mri_3d", "gan_pretrain_seg_2d", "wgan_pairs_seg_2d",
       "adversarial_unet_aug_2d")
SYNTHESIS = {"mmgan_label2mri_3d", "cycleshape_ct_mri_3d"}
ROOT = Path(__file__).resolve().parent.parent
AFFINE = np.array([[0, -2.0, 0, 30], [1.5, 0, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])


def _random_weights(bundle: str, path: Path) -> Path:
    """``models/model.pt`` for the inference network, in the pre-0.2 ``{"model": state_dict}`` form (still loaded)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(BUNDLES / bundle)
    torch.manual_seed(0)
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, str(path))
    return path


def _volumes(folder: Path) -> dict[str, Path]:
    """A label map (MM-GAN input), a CT-like volume (CT -> MRI) and three MR-like images with binary labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    out = {}
    img, lab = tiny_case(rng, (24, 20, 16))
    out["labelmap"] = folder / "labelmap.nii.gz"
    nib.save(nib.Nifti1Image(np.where(lab == 0, 0, lab).astype(np.uint8), AFFINE), str(out["labelmap"]))
    out["ct"] = folder / "ct.nii.gz"
    nib.save(nib.Nifti1Image((img * 0.3 - 100).astype(np.float32), AFFINE), str(out["ct"]))
    return out


@pytest.mark.parametrize("bundle", ALL)
def test_inference_config_satisfies_monai_label_and_infer_properties(bundle, tmp_path):
    cfg = BUNDLES / bundle / "configs"
    meta = json.loads((cfg / "metadata.json").read_text(encoding="utf-8"))
    assert next(iter(meta["network_data_format"]["inputs"])) == "image"
    assert next(iter(meta["network_data_format"]["outputs"])) == "pred"
    parser = ConfigParser()
    parser.read_config(str(cfg / "inference.yaml"))
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "device", "bundle_root"):
        assert key in parser.config, f"{bundle}: inference.yaml has no {key!r}"
    vols = _volumes(tmp_path / "in")
    src = str(vols["labelmap" if bundle == "mmgan_label2mri_3d" else "ct"])
    ck = _random_weights(bundle, tmp_path / "model.pt")
    wf = ConfigWorkflow(config_file=str(cfg / "inference.yaml"), meta_file=str(cfg / "metadata.json"),
                        logging_file=None, workflow_type="infer", bundle_root=str(BUNDLES / bundle),
                        input=src, ckpt_path=str(ck),
                        output_dir=str(tmp_path / "out"), device="cpu")
    wf.initialize()
    assert wf.check_properties() == [], "MONAI InferProperties missing"
    # the keys MONAI Label feeds and reads: "image" in, "pred" out, through its own pre/post lists
    data = parser.get_parsed_content("preprocessing", instantiate=True)({"image": src})
    assert "image" in data


def test_bundle_kinds_and_discovery(tmp_path):
    assert {b for b in ALL if bundle_kind(BUNDLES / b) == "synthesis"} == SYNTHESIS
    found = discover_bundles(BUNDLES)
    assert set(found) == set(ALL)
    assert list(discover_bundles(BUNDLES, "wgan_pairs_seg_2d,mmgan_label2mri_3d")) == [
        "wgan_pairs_seg_2d", "mmgan_label2mri_3d"]
    with pytest.raises(VolganConfigError, match="no bundle folder for"):
        discover_bundles(BUNDLES, "nope")
    with pytest.raises(VolganConfigError, match="no bundles"):
        discover_bundles(tmp_path)


def test_prepare_app_copies_bundles_and_weights_and_refuses_to_overwrite(tmp_path):
    w = _random_weights("wgan_pairs_seg_2d", tmp_path / "w.pt")
    app = prepare_app(tmp_path / "app", {"wgan_pairs_seg_2d": BUNDLES / "wgan_pairs_seg_2d"},
                      weights={"wgan_pairs_seg_2d": w})
    assert (app / "main.py").is_file()
    assert (app / "model" / "wgan_pairs_seg_2d" / "configs" / "inference.yaml").is_file()
    assert (app / "model" / "wgan_pairs_seg_2d" / "models" / "model.pt").read_bytes() == w.read_bytes()
    with pytest.raises(VolganConfigError, match="not empty"):
        prepare_app(tmp_path / "app", {})
    with pytest.raises(VolganConfigError, match="not found"):
        prepare_app(tmp_path / "app2", {"wgan_pairs_seg_2d": BUNDLES / "wgan_pairs_seg_2d"},
                    weights={"wgan_pairs_seg_2d": tmp_path / "missing.pt"})


def test_server_command_is_offline_and_local_by_default(tmp_path):
    cmd = serve_command(tmp_path / "app", tmp_path / "studies", port=8123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    joined = " ".join(cmd)
    assert "--conf zoo_source local" in joined and "--conf sam2 false" in joined


# ---------------------------------------------------------------- the real server (MONAI Label's own venv)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 600):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def _multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, p in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{p.name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + p.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _studies(folder: Path) -> list[Path]:
    """Three labelled MR-like studies (binary labels in labels/final, as MONAI Label's datastore keeps them)."""
    (folder / "labels" / "final").mkdir(parents=True)
    rng = np.random.RandomState(1)
    images = []
    for i in range(3):
        img, lab = tiny_case(rng, (24, 20, 16))
        p = folder / f"study{i}.nii.gz"
        nib.save(nib.Nifti1Image(img.astype(np.float32), AFFINE), str(p))
        nib.save(nib.Nifti1Image((lab == 4).astype(np.uint8), AFFINE), str(folder / "labels" / "final" / p.name))
        images.append(p)
    return images


def test_monailabel_server_serves_every_bundle_and_trains_a_segmentor(tmp_path):
    py = tools_venv_python("monailabel, volgan.apps.monailabel.tasks")
    weights = {b: _random_weights(b, tmp_path / f"{b}.pt") for b in ALL}
    app = prepare_app(tmp_path / "app", {b: BUNDLES / b for b in ALL}, weights=weights)
    studies = _studies(tmp_path / "studies")
    vols = _volumes(tmp_path / "inputs")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), XDG_CONFIG_HOME=str(home / "config"),
               MPLCONFIGDIR=str(home / "mpl"), MONAI_LABEL_SESSION_PATH=str(home / "sessions"),
               MONAI_LABEL_DATASTORE_AUTO_RELOAD="false", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    port = _free_port()
    env.update(serve_env(port=port))  # CORS: the server's own origin only
    log = open(tmp_path / "server.log", "w", encoding="utf-8")
    proc = subprocess.Popen(serve_command(app, tmp_path / "studies", port=port, python=py), stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def tail() -> str:
        log.flush()
        return (tmp_path / "server.log").read_text(encoding="utf-8", errors="replace")[-4000:]

    try:
        deadline = time.time() + 240
        info = None
        while time.time() < deadline:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{tail()}"
            try:
                info = json.loads(_request(f"{base}/info/", timeout=10))
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        assert info is not None, f"server not ready in 240 s:\n{tail()}"
        assert set(info["models"]) == set(ALL), tail()
        for b in ALL:
            assert info["models"][b]["type"] == ("others" if b in SYNTHESIS else "segmentation"), b
            assert info["models"][b]["dimension"] == 3, b
        assert set(info["trainers"]) == set(ALL) - SYNTHESIS

        for b in ALL:
            src = vols["labelmap"] if b == "mmgan_label2mri_3d" else vols["ct"] if b == "cycleshape_ct_mri_3d" \
                else studies[0]
            body, headers = _multipart({"params": json.dumps({"device": "cpu"})}, {"file": src})
            try:
                raw = _request(f"{base}/infer/{b}?output=image", body, headers)
            except urllib.error.HTTPError as e:
                raise AssertionError(f"/infer/{b}: HTTP {e.code} {e.read()[:500]!r}\n{tail()}") from None
            out = tmp_path / f"{b}_out.nii.gz"
            out.write_bytes(raw)
            got, ref = nib.load(str(out)), nib.load(str(src))
            assert got.shape[:3] == ref.shape, (b, got.shape, ref.shape)
            np.testing.assert_allclose(got.affine, ref.affine, atol=1e-4, err_msg=b)
            arr = np.asarray(got.dataobj)
            assert np.isfinite(arr).all(), b
            if b in SYNTHESIS:
                assert np.issubdtype(got.get_data_dtype(), np.floating), (b, got.get_data_dtype())
                assert len(np.unique(arr)) > 10, f"{b}: an image was expected, got few values"
            else:
                assert set(np.unique(arr)) <= {0, 1}, (b, np.unique(arr))

        # issue #18: a bad upload is a 4xx with the bundle's one-line message, never a 500 or a silent misread
        garbage = tmp_path / "garbage.nii.gz"
        garbage.write_bytes(b"\x1f\x8bnot really gzip" * 20)
        nan_img = tmp_path / "nan.nii.gz"
        arr = np.asarray(nib.load(str(studies[0])).dataobj).astype(np.float32)
        arr[1, 1, 1] = np.nan
        nib.save(nib.Nifti1Image(arr, AFFINE), str(nan_img))
        odd_labels = tmp_path / "odd_labels.nii.gz"
        lab = np.asarray(nib.load(str(vols["labelmap"])).dataobj).astype(np.uint8)
        lab[lab == 4] = 9
        nib.save(nib.Nifti1Image(lab, nib.load(str(vols["labelmap"])).affine), str(odd_labels))
        bad_uploads = [(b, garbage, "unreadable or corrupt image") for b in ALL]
        bad_uploads += [(b, nan_img, r"contains 1 NaN") for b in ALL if b != "mmgan_label2mri_3d"]
        bad_uploads += [("mmgan_label2mri_3d", odd_labels, r"label values \[9\] not in the configured set")]
        for b, upload, problem in bad_uploads:
            body, headers = _multipart({"params": json.dumps({"device": "cpu"})}, {"file": upload})
            with pytest.raises(urllib.error.HTTPError) as err:
                _request(f"{base}/infer/{b}?output=image", body, headers)
            detail = json.loads(err.value.read()).get("detail", "")
            assert err.value.code == 422, (b, upload.name, err.value.code, detail, tail())
            assert detail.startswith("the uploaded image: ") and "\n" not in detail, (b, detail)
            assert re.search(problem, detail), (b, upload.name, detail)

        # a file of the server that is neither an upload nor a datastore image is not read
        with pytest.raises(urllib.error.HTTPError) as err:
            _request(f"{base}/infer/mmgan_label2mri_3d?image={urllib.parse.quote(str(vols['labelmap']))}&output=image",
                     *_multipart({"params": "{}"}, {}))
        assert err.value.code == 403, (err.value.code, tail())

        model_pt = app / "model" / "wgan_pairs_seg_2d" / "models" / "model.pt"
        before = model_pt.read_bytes()
        params = {"max_epochs": 1, "gan_iterations": 2, "image_size": [32, 32], "val_interval": 1,
                  "ratio": "8-8", "device": "cpu", "multi_gpu": False, "val_split": 0.34}
        try:
            _request(f"{base}/train/wgan_pairs_seg_2d?run_sync=true", json.dumps(params).encode(),
                     {"Content-Type": "application/json"}, timeout=900)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"/train/: HTTP {e.code} {e.read()[:500]!r}\n{tail()}") from None
        assert model_pt.read_bytes() != before, f"training did not write models/model.pt\n{tail()}"
        assert (app / "model" / "wgan_pairs_seg_2d" / "models" / "model_g.pt").is_file(), "the WGAN-GP did not train"
        body, headers = _multipart({"params": "{}"}, {"file": studies[1]})
        (tmp_path / "after.nii.gz").write_bytes(_request(f"{base}/infer/wgan_pairs_seg_2d?output=image", body, headers))
        assert nib.load(str(tmp_path / "after.nii.gz")).shape[:3] == nib.load(str(studies[1])).shape

        # issue #18: request values are data, never code; unknown keys and wrong types are refused with a 4xx
        marker = tmp_path / "marker"
        attacks = [{"ratio": f"$open({str(marker)!r}, 'w').write('x') and '8-8'"},
                   {"max_epochs": f"$open({str(marker)!r}, 'w').write('x') and 1"},
                   {"image_size": [f"$open({str(marker)!r}, 'w').write('x') and 32", 32]},
                   {"ratio": "@network"}, {"gan_iterations": "%configs/train.yaml#max_epochs"},
                   {"initialize": ["$print(1)"]}, {"gan_iterations": "2"}, {"device": "cpu; rm -rf /"}]
        for attack in attacks:
            with pytest.raises(urllib.error.HTTPError) as err:
                _request(f"{base}/train/wgan_pairs_seg_2d?run_sync=true", json.dumps({**params, **attack}).encode(),
                         {"Content-Type": "application/json"}, timeout=300)
            assert 400 <= err.value.code < 500, (attack, err.value.code, tail())
            assert not marker.exists(), f"code from a request ran: {attack}"

        def cors_allowed(origin: str):
            preflight = urllib.request.Request(f"{base}/train/wgan_pairs_seg_2d", method="OPTIONS", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST"})
            try:
                with urllib.request.urlopen(preflight, timeout=30) as r:
                    return r.headers.get("access-control-allow-origin")
            except urllib.error.HTTPError as e:
                return e.headers.get("access-control-allow-origin")

        assert cors_allowed("http://attacker.example") is None, "CORS lets any web page call the server"
        assert cors_allowed(f"http://127.0.0.1:{port}") == f"http://127.0.0.1:{port}", "the server's own origin"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=20)
        log.close()
    assert proc.poll() is not None


def test_label_app_cli_writes_the_app_and_reports_bad_input(tmp_path, capsys):
    from volgan.apps.cli import main

    w = _random_weights("wgan_pairs_seg_2d", tmp_path / "w.pt")
    assert main(["label-app", str(tmp_path / "app"), "--bundle", f"wgan_pairs_seg_2d={w}",
                 "--bundle", "mmgan_label2mri_3d"]) == 0
    assert set(discover_bundles(tmp_path / "app" / "model")) == {"wgan_pairs_seg_2d", "mmgan_label2mri_3d"}
    assert main(["label-app", str(tmp_path / "app2"), "--bundle", "no_such_bundle"]) == 2
    assert "no bundle 'no_such_bundle'" in capsys.readouterr().err
    assert main(["label-app", str(tmp_path / "app3"), "--bundle", "wgan_pairs_seg_2d", "--serve"]) == 2
    assert "--studies" in capsys.readouterr().err


def test_train_requests_are_data_with_known_keys_and_declared_types():
    """The check every /train/ request goes through before it reaches a bundle (issue #18)."""
    cfg = ConfigParser.load_config_file(str(BUNDLES / "wgan_pairs_seg_2d" / "configs" / "train.yaml"))
    ok = {"model": "wgan_pairs_seg_2d", "max_epochs": 2, "ratio": "8-8", "gan_iterations": 10, "image_size": [32, 32],
          "device": ["cpu"], "model_filename": ["model.pt", "model_g.pt"], "tracking": ["None", "mlflow"], "run_id": ""}
    assert check_train_request(ok, cfg) == ok
    for bad, match in (({"ratio": "$__import__('os').system('id')"}, "would be run"),
                       ({"max_epochs": "$1"}, "would be run"), ({"image_size": ["@x", 1]}, "would be run"),
                       ({"nested": {"k": "%f.yaml#a"}}, "unknown"), ({"initialize": []}, "unknown"),
                       ({"gan_iterations": "10"}, "must be like"), ({"gan_iterations": True}, "must be like"),
                       ({"augment": "yes"}, "must be like"), ({"max_epochs": 0}, "positive integer"),
                       ({"device": "cuda; rm -rf /"}, "cpu or cuda"), ({"model_filename": "../../x.pt"}, "plain name")):
        with pytest.raises(VolganConfigError, match=match):
            check_train_request({**ok, **bad}, cfg)
    env = serve_env(port=8123, cors_origins=["http://viewer:3000"])
    origins = json.loads(env["MONAI_LABEL_CORS_ORIGINS"])
    assert "*" not in origins and "http://127.0.0.1:8123" in origins and "http://viewer:3000" in origins
