"""The notebooks (issue #7) run end to end on tiny settings, so they cannot rot; they are stored without outputs and
all listed in notebooks/README.md.

Every notebook is executed with nbclient in a fresh kernel (``VOLGAN_NOTEBOOK_TINY=1``, matplotlib's Agg backend,
its own temporary working folder, so ``nb_runs/`` lands there), two kernels at a time, each under a per-notebook
timeout; each must finish without an error and save its figure ``nb_runs/<notebook>/figure.png``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))
EXPECTED = [
    "01_mmgan_label2mri_3d.ipynb",
    "02_cycleshape_ct_mri_3d.ipynb",
    "03_gan_pretrain_seg_2d.ipynb",
    "04_adversarial_unet_aug_2d.ipynb",
    "05_wgan_pairs_seg_2d.ipynb",
    "06_bring_your_own_data.ipynb",
]
TIMEOUT_S = 300  # per notebook (each takes ~15 s on 2 CPU cores, most of it importing torch/MONAI)
PARALLEL = 2  # kernels at a time (the tiny runs are dominated by single-threaded imports)
KERNEL = "volgan-notebook-tests"  # a kernelspec of this interpreter, so a user's "python3" spec cannot take over


def _read(name: str) -> dict:
    return json.loads((NB_DIR / name).read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_one_notebook_per_method_plus_own_data():
    assert NOTEBOOKS == EXPECTED


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name):
    nb = _read(name)
    assert nb["nbformat"] == 4
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{name}: clear the outputs"
        assert "execution" not in cell.get("metadata", {}), f"{name}: execution timing stored"
    assert "widgets" not in nb.get("metadata", {})


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_code_cell_is_the_parameters_with_a_tiny_switch(name):
    nb = _read(name)
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    src = _source(first)
    assert 'TINY = os.environ.get("VOLGAN_NOTEBOOK_TINY") == "1"' in src
    assert re.search(r'^RUN = Path\("nb_runs"\) / "' + re.escape(Path(name).stem) + '"', src, re.M), \
        f"{name}: RUN must be nb_runs/<notebook name> (the test looks for the figure there)"
    assert any('savefig(RUN / "figure.png"' in _source(c) for c in nb["cells"])


def test_readme_lists_every_notebook():
    text = (NB_DIR / "README.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert f"`{name}`" in text or f"({name})" in text, f"notebooks/README.md does not list {name}"


def test_run_outputs_are_ignored_by_git():
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "notebooks/nb_runs/" in lines


# --- execution -----------------------------------------------------------------------------------------------------


async def _execute(name: str, workdir: Path, env: dict, sem: asyncio.Semaphore) -> dict:
    import nbformat
    from nbclient import NotebookClient

    async with sem:
        nb = nbformat.read(str(NB_DIR / name), as_version=4)
        client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name=KERNEL, allow_errors=False,
                                resources={"metadata": {"path": str(workdir)}})
        t0 = time.perf_counter()
        error = None
        try:
            await asyncio.wait_for(client.async_execute(env=env), TIMEOUT_S)
        except (Exception, asyncio.TimeoutError) as e:  # noqa: BLE001  (CellExecutionError: the cell's traceback)
            error = f"{type(e).__name__}: {e}"
            if time.perf_counter() - t0 >= TIMEOUT_S:  # nbclient reports the cancelled run as a dead kernel
                error = f"timed out after {TIMEOUT_S} s ({error})"
        return {"seconds": time.perf_counter() - t0, "error": error, "nb": nb}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Run every notebook once (PARALLEL kernels at a time); results keyed by notebook name."""
    pytest.importorskip("nbclient")
    pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec = jupyter_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "volgan notebook tests", "language": "python"}), encoding="utf-8")
    env = dict(os.environ)
    env.update(VOLGAN_NOTEBOOK_TINY="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", CI="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    dirs = {name: tmp_path_factory.mktemp(Path(name).stem) for name in NOTEBOOKS}

    async def run_all():
        sem = asyncio.Semaphore(PARALLEL)
        results = await asyncio.gather(*(_execute(n, dirs[n], env, sem) for n in NOTEBOOKS))
        return dict(zip(NOTEBOOKS, results))

    t0 = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(jupyter_path))
        results = asyncio.run(run_all())
    total = time.perf_counter() - t0
    for name, r in results.items():
        r["workdir"] = dirs[name]
    print(f"\nnotebooks executed in {total:.1f} s ({PARALLEL} at a time): "
          + ", ".join(f"{n} {r['seconds']:.1f} s" for n, r in results.items()))
    return results


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_on_tiny_settings(name, executed, record_property):
    r = executed[name]
    record_property("notebook_seconds", round(r["seconds"], 1))
    print(f"{name}: {r['seconds']:.1f} s")
    assert r["error"] is None, f"{name} failed:\n{r['error'][-4000:]}"
    errors = [o for c in r["nb"].cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    fig = r["workdir"] / "nb_runs" / Path(name).stem / "figure.png"
    assert fig.is_file(), f"{name} did not save {fig.name}"
    assert fig.stat().st_size > 10_000  # a real multi-panel figure, not an empty canvas
    import matplotlib.image

    pixels = matplotlib.image.imread(str(fig))
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500 and float(pixels[..., :3].std()) > 0.05
