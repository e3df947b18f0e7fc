"""Session fixtures for the backbone tests: random torchvision-layout weights, their .pth /
.safetensors files, one conversion per session, and the torch reference network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_helpers import random_state_dict, torch_reference


@pytest.fixture(scope="session")
def wrn_sd() -> dict[str, np.ndarray]:
    return random_state_dict("wide_resnet50_2", seed=0)


@pytest.fixture(scope="session")
def wrn_files(tmp_path_factory, wrn_sd) -> dict[str, Path]:
    """The WRN50-2 random weights saved as .pth (torch.save of tensors) and .safetensors."""
    import torch
    from safetensors.numpy import save_file

    d = tmp_path_factory.mktemp("wrn_files")
    pth = d / "wrn_random.pth"
    torch.save({k: torch.from_numpy(v) for k, v in wrn_sd.items()}, pth)
    st = d / "wrn_random.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in wrn_sd.items()}, str(st))
    return {"pth": pth, "safetensors": st}


@pytest.fixture(scope="session")
def wrn_converted(tmp_path_factory, wrn_files) -> Path:
    """One conversion of the .pth (fc kept) shared by the whole session."""
    from jad.models.convert import convert_file

    out = tmp_path_factory.mktemp("converted") / "wrn50"
    convert_file(wrn_files["pth"], out, keep_fc=True)
    return out


@pytest.fixture(scope="session")
def wrn_torch(wrn_sd):
    return torch_reference("wide_resnet50_2", wrn_sd)
