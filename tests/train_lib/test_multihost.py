"""Multi-host runs on localhost: 2 processes x 4 simulated CPU devices (gloo collectives) vs one
process with 8 devices, through the real CLI (`--coordinator_address --num_processes --process_id`).

- PatchCore: the coreset picks, the bank and every test score are bit-identical (the kernels'
  shapes never depend on the device layout; each host scores its block of the test images). The
  one-process run has 4 devices, like each process of the pair: with jad's YNNPACK-off conv flag,
  XLA:CPU's convolutions round differently in a process that simulates 4 or more CPU devices
  than in one with fewer, and differently again at 4 and 8 (measured on an AVX2-only EPYC: the
  WRN50 layer1-3 outputs of the same images differ by up to 6.5e-5 between 1, 4 and 8 simulated
  devices; 1, 2 and 3 agree; with XLA's default YNNPACK convs all agree). A real host has one CPU
  device, so this is a property of the simulation, not of multi-host runs; the coreset and kNN
  are bit-identical over 4 and 8 devices by construction (tests/ops/test_sharded.py). Batches of
  one image: there, an image's features also depend on its position in the batch (image 0 of
  [a, b] differs from image 1 of [b, a] in the last bits), and the two processes cut the images
  into batches at other places than one process does.
- PBAS, 3 steps: the same parameters to the golden tolerance (2 * lr * steps; the reduction order
  over 8 devices in 2 processes differs from 8 in one) and the same losses (rtol 1e-5).
- ProxyCore and APC, 3 steps: the same (pseudo-label / bank) coreset picks, parameters within
  2 * lr * steps, losses and test scores to 1e-5 / 1e-4 relative.

PatchCore, APC and the dead-process test run the tiny configs (``resnet_tiny``). The PBAS and
ProxyCore pairs keep the synthetic configs' random WRN50-2 and the trainers' own feature sizes and
learning rates: their float tolerances were measured there, and with the tiny backbone's small,
nearly tied features the reduction-order noise moves a coreset pick (ProxyCore's bank) and PBAS's
losses past them (measured), so those two stay where the tolerances mean what they say.
- A process that dies makes the other exit with an error within a bounded time (no hang).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jad.train_lib import checkpoint

REPO = Path(__file__).resolve().parents[2]
# not `determinism`: the subprocesses set their own XLA_FLAGS, so .ci/run's AVX2-capped rerun of
# the determinism tests would only repeat them.
pytestmark = [pytest.mark.slow]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XLA_", "JAX_"))
        or k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))  # the session's cache
    }
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _train_args(config: str, root, workdir, *extra: str) -> list[str]:
    """``jad.train`` with ``config`` (a path, ``:tiny`` for its tiny variant) on category disc of
    ``root``, then ``extra``."""
    return [
        sys.executable,
        "-m",
        "jad.train",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.data.root={root}",
        "--config.data.categories=disc",
        "--config.data.use_tfds=False",
        "--config.eval.num_heatmaps=0",
        "--quiet",
        *extra,
    ]


def _start_two(args: list[str], stdout=subprocess.PIPE) -> list[subprocess.Popen]:
    """The same command as processes 0 and 1 of a 2-process run (4 CPU devices each)."""
    port = _port()
    return [
        subprocess.Popen(
            [
                *args,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=REPO,
            env=_env(4),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _run_two(args: list[str], timeout: int = 600) -> list[subprocess.CompletedProcess]:
    procs = _start_two(args)
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _one_and_two(config: str, root, tmp_path, extra: list[str]):
    """(one-process checkpoint, meta, results), (two-process ...) of the same command."""
    one = subprocess.run(
        _train_args(config, root, tmp_path / "one", *extra),
        cwd=REPO,
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    for r in _run_two(_train_args(config, root, tmp_path / "two", *extra)):
        assert r.returncode == 0, r.stderr[-3000:]
    out = []
    for run in ("one", "two"):
        state, meta = checkpoint.restore(tmp_path / run / "disc" / "checkpoint")
        results = json.loads((tmp_path / run / "results.json").read_text())
        assert meta["fit_info"]["parallel"] == "jit on 8 device(s)"
        out.append((state, meta, results))
    return out


def _leaves_close(a, b, **tol) -> None:
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, **tol)


def _same_losses(ma: dict, mb: dict, keys=None) -> None:
    """The final step's metrics to rtol 1e-5 (``keys``, default all, and the same set)."""
    la, lb = ma["fit_info"]["final_metrics"], mb["fit_info"]["final_metrics"]
    if keys is None:
        assert set(la) == set(lb)
        keys = la
    for k in keys:
        np.testing.assert_allclose(la[k], lb[k], rtol=1e-5, err_msg=k)


def _close_scores(ra: dict, rb: dict, rtol: float) -> None:
    sa, sb = ra["details"]["disc"]["image_scores"], rb["details"]["disc"]["image_scores"]
    assert list(sa) == list(sb)  # the same images, in the same order, none padded in
    np.testing.assert_allclose(list(sa.values()), list(sb.values()), rtol=rtol)


PATCHCORE = [  # 88 px: 11 x 11 patches x 6 images = 726 rows, not a multiple of the 8 devices
    "--config.data.resize=88",
    "--config.data.crop=88",
    "--config.data.batch_size=1",  # see the module docstring
    "--config.patchcore.coreset_ratio=0.25",
]
PBAS = [
    "--config.data.resize=64",
    "--config.data.crop=64",
    "--config.data.batch_size=2",
    "--config.train.steps=3",
    "--config.train.batch_size=8",
    "--config.train.tensorboard=False",
]


def test_patchcore_two_processes_equal_one_process_bit_for_bit(small_synthetic, tmp_path):
    one = subprocess.run(
        _train_args(
            "configs/patchcore_synthetic.py:tiny", small_synthetic, tmp_path / "one", *PATCHCORE
        ),
        cwd=REPO,
        env=_env(4),  # as each process of the pair (see the module docstring)
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run_two(
        _train_args(
            "configs/patchcore_synthetic.py:tiny", small_synthetic, tmp_path / "two", *PATCHCORE
        )
    )
    for r in two:
        assert r.returncode == 0, r.stderr[-3000:]
    # one console: the table from process 0 only
    assert "results:" in two[0].stdout and "results:" in one.stdout
    assert two[1].stdout == "", two[1].stdout[-2000:]
    a, _ = checkpoint.restore(tmp_path / "one" / "disc" / "checkpoint")
    b, meta = checkpoint.restore(tmp_path / "two" / "disc" / "checkpoint")
    np.testing.assert_array_equal(a["coreset_indices"], b["coreset_indices"])
    np.testing.assert_array_equal(a["bank"], b["bank"])
    ra = json.loads((tmp_path / "one" / "results.json").read_text())
    rb = json.loads((tmp_path / "two" / "results.json").read_text())
    assert rb["run"]["devices"] == 8 and ra["run"]["devices"] == 4
    assert ra["details"]["disc"]["image_scores"] == rb["details"]["disc"]["image_scores"]
    assert ra["metrics"] == rb["metrics"]
    assert ra["details"]["disc"]["calibration"] == rb["details"]["disc"]["calibration"]


def test_pbas_two_processes_equal_one_process(small_synthetic, tmp_path):
    (a, ma, _), (b, mb, _) = _one_and_two(
        "configs/pbas_synthetic.py", small_synthetic, tmp_path, PBAS
    )
    for part, lr in (("projector", 1e-4), ("discriminator", 2e-4)):
        _leaves_close(a["params"][part], b["params"][part], atol=2 * lr * 3, rtol=0)
    _same_losses(ma, mb, ("loss", "svdd", "bce_true", "bce_fake"))


def test_a_dead_process_stops_the_other_within_a_minute(small_synthetic, tmp_path):
    args = _train_args(
        "configs/pbas_synthetic.py:tiny",
        small_synthetic,
        tmp_path / "w",
        *[a for a in PBAS if "train.steps" not in a],
        "--config.train.steps=100000",
    )
    procs = _start_two(args, stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "w" / "disc").glob("train/*")):
        assert procs[0].poll() is None and procs[1].poll() is None, "a process ended early"
        time.sleep(0.5)
    os.kill(procs[1].pid, signal.SIGKILL)
    t0 = time.time()
    try:
        _, stderr = procs[0].communicate(timeout=60)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail("the surviving process hung for more than 60 s after its peer died")
    assert procs[0].returncode != 0
    # the survivor says why in one line: its next collective lost the peer, or the coordination
    # service declared the peer dead (whichever comes first)
    assert "error: lost contact with another process" in stderr or "another task died" in stderr, (
        stderr[-2000:]
    )
    assert time.time() - t0 < 60


def test_proxycore_two_processes_equal_one_process(small_synthetic, tmp_path):
    (a, ma, ra), (b, mb, rb) = _one_and_two(
        "configs/proxycore_synthetic.py",
        small_synthetic,
        tmp_path,
        [
            *PBAS[:3],
            "--config.train.steps=3",
            "--config.train.batch_size=64",
            "--config.proxycore.proxy_shard_gb=0",  # proxies + moments split over all devices
            # TensorBoard on: the heatmap preview at the evaluation builds a bank (a coreset over
            # both processes), which every process must join (it hung when only process 0 did)
        ],
    )
    lr, steps = 1e-5, 3  # proxycore.lr
    _leaves_close(a["params"], b["params"], atol=2 * lr * steps, rtol=0)
    _leaves_close(a["batch_stats"], b["batch_stats"], rtol=1e-4, atol=1e-4)
    # the bank: the same coreset picks of nearly the same embeddings (a different pick would
    # move a row by the spread of the embeddings, orders of magnitude more)
    np.testing.assert_allclose(a["bank"], b["bank"], rtol=1e-4, atol=1e-4)
    _same_losses(ma, mb)
    _close_scores(ra, rb, rtol=1e-4)


def test_apc_two_processes_equal_one_process(small_synthetic, tmp_path):
    (a, ma, ra), (b, mb, rb) = _one_and_two(
        "configs/apc_synthetic.py:tiny",
        small_synthetic,
        tmp_path,
        [
            *PBAS[:3],
            "--config.train.steps=3",
            "--config.train.batch_size=4",
            "--config.apc.anomalous_batch=4",
            "--config.data.labelled_anomalies=2",
            "--config.train.tensorboard=False",
            "--config.train.checkpoint_every=0",
            # a shorter backward pass than layer2's (less to compile) that still trains layer3, so
            # the bank's features come from the trained encoder; the equality of the two layouts
            # is the point here, tests/methods/test_apc.py covers training from layer2
            "--config.apc.train_from=layer3",
        ],
    )
    np.testing.assert_array_equal(a["coreset_indices"], b["coreset_indices"])
    lr, steps = 1e-5, 3  # apc.lr_encoder
    _leaves_close(a["encoder"], b["encoder"], atol=2 * lr * steps, rtol=0)
    np.testing.assert_allclose(a["bank"], b["bank"], rtol=1e-4, atol=1e-4)
    _same_losses(ma, mb)
    _close_scores(ra, rb, rtol=1e-4)
