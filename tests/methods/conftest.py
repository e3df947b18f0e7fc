"""A small synthetic dataset and a fast PatchCore config shared by the method/CLI tests."""

import pytest


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory):
    from jad.data import synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    # 96 px images, 6 train, 3 good + 3 x 2 defective test images per category
    return synthetic.generate(root, seed=0, image_size=96, n_train=6, n_test_good=3, n_per_defect=2)
