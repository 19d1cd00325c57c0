import pickle
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from ddnb.data import DataConfig, Split, balanced_head, load_dataset, sample_per_class
from ddnb.data import cifar10 as cifar10_module
from ddnb.data.folder import read_image_folder
from ddnb.data.zca import fit_zca
from ddnb.errors import DdnbError
from ddnb.store import Store

CLASSES = ["cat", "ant", "bee"]  # deliberately unsorted: class order must come out sorted


def _write_tree(root, splits=("train", "test"), per_class=4, size=8, fmt="png"):
    rng = np.random.default_rng(0)
    for split in splits:
        for c, name in enumerate(CLASSES):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((size, size, 3), 40 * (c + 1), np.uint8) + rng.integers(0, 5, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.{fmt}")
    return root


def test_folder_and_tar_give_identical_sorted_classes(tmp_path):
    tree = _write_tree(tmp_path / "tree")
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="wrapped")  # a top-level folder inside the tar is allowed
    from_dir, from_tar = read_image_folder(tree), read_image_folder(archive)
    assert from_dir[0] == from_tar[0] == ["ant", "bee", "cat"]
    for a, b in zip(from_dir[1:], from_tar[1:]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    images, labels = from_dir[1]
    assert images.dtype == torch.uint8 and images.shape == (12, 3, 8, 8)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # "ant" pixels were written with value 80 (+noise): label 0 must hold them
    assert 80 <= images[labels == 0].float().mean() <= 85


def test_single_tree_holds_out_a_seeded_test_split(tmp_path):
    tree = _write_tree(tmp_path / "tree", splits=("",), per_class=12)
    classes, (train_x, train_y), (test_x, test_y) = read_image_folder(tree, seed=1)
    assert len(train_y) + len(test_y) == 36 and test_y.bincount().tolist() == [2, 2, 2]
    again = read_image_folder(tree, seed=1)
    assert torch.equal(again[2][0], test_x)


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(DdnbError, match="does not exist"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DdnbError, match="no images"):
        read_image_folder(tmp_path / "empty")
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(DdnbError, match="neither a folder nor a readable tar"):
        read_image_folder(tmp_path / "junk.tar")


def test_imagefolder_dataset_is_cached_and_normalised(tmp_path):
    tree = _write_tree(tmp_path / "tree", per_class=6)
    store = Store(tmp_path / "store")
    dataset = load_dataset(DataConfig(f"imagefolder:{tree}"), store)
    assert dataset.classes == ["ant", "bee", "cat"] and dataset.image_shape == (3, 8, 8)
    assert torch.allclose(dataset.train.images.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(dataset.train.images.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    assert len(list((store.root / "dataset").glob("*.safetensors"))) == 1
    for file in tree.rglob("*.png"):  # the second load must come from the cache, not the files
        file.write_bytes(b"")
    cached = load_dataset(DataConfig(f"imagefolder:{tree}"), store)
    assert torch.equal(cached.train.images, dataset.train.images)
    pixels = dataset.transform.decode(dataset.test.images)
    assert pixels.min() >= 0 and pixels.max() <= 1
    assert load_dataset(DataConfig(f"imagefolder:{tree}", test_size=6), store).test.labels.tolist() == [0, 0, 1, 1, 2, 2]  # not one class


def test_unknown_data_set_and_missing_path(tmp_path):
    with pytest.raises(DdnbError, match="unknown data set"):
        load_dataset(DataConfig("mnist"), Store(tmp_path))
    with pytest.raises(DdnbError, match="does not exist"):
        load_dataset(DataConfig(f"imagefolder:{tmp_path}/nope"), Store(tmp_path))


def _fake_cifar_batches(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = list(range(10)) * 2
        data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        data[:, 0] = labels  # the first red pixel encodes the label, to check the layout
        with open(folder / name, "wb") as file:
            pickle.dump({"data": data, "labels": labels}, file)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": cifar10_module.CLASSES}, file)


def test_cifar10_reads_torchvision_files(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    _fake_cifar_batches(tmp_path)
    # our fake files lack the official md5 sums that torchvision checks before reading
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)
    classes, (train_x, train_y), (test_x, test_y) = cifar10_module.read_cifar10(tmp_path)
    assert classes == cifar10_module.CLASSES
    assert train_x.shape == (100, 3, 32, 32) and test_x.shape == (20, 3, 32, 32)
    assert torch.equal(train_x[:, 0, 0, 0].long(), train_y)


def test_cifar10_without_files_or_network_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(DdnbError, match="imagefolder:PATH") as error:
        cifar10_module.read_cifar10(tmp_path / "none")
    assert "DDNB_CIFAR10" in str(error.value)


def test_sample_per_class_is_balanced_seeded_and_checks_size():
    labels = torch.arange(10).repeat_interleave(7)
    chosen = sample_per_class(labels, 3, seed=0)
    assert labels[chosen].tolist() == sorted(labels[chosen].tolist()) and labels[chosen].bincount().tolist() == [3] * 10
    assert len(set(chosen.tolist())) == 30
    assert torch.equal(chosen, sample_per_class(labels, 3, seed=0))
    assert not torch.equal(chosen, sample_per_class(labels, 3, seed=1))
    with pytest.raises(DdnbError, match="only 7 images"):
        sample_per_class(labels, 8, seed=0)


def test_the_head_of_a_class_sorted_split_is_balanced():
    labels = torch.arange(10).repeat_interleave(7)  # sorted by class, as an image folder is: [:20] is two classes
    head = balanced_head(labels, 23)
    assert labels[head].bincount().tolist() == [3, 3, 3] + [2] * 7  # 23 = 10 x 2 + 3
    assert head.tolist() == sorted(head.tolist()) and all(int(i) % 7 < 3 for i in head)  # the first of each class
    assert torch.equal(balanced_head(labels, None), torch.arange(70)) and torch.equal(balanced_head(labels, 500), torch.arange(70))
    split = Split(torch.arange(70.0).view(70, 1, 1, 1), labels, {"size": torch.arange(70)})
    assert torch.equal(split.head(23).attributes["size"], head) and torch.equal(split.head(23).labels, labels[head])


def test_zca_whitens_and_inverts():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(12, 12, generator=generator)
    images = (torch.randn(4000, 12, generator=generator) @ mixing).view(-1, 3, 2, 2)
    mean, whitening, inverse = fit_zca(images, regularization=1e-6)
    white = (images.flatten(1) - mean) @ whitening
    covariance = white.T @ white / (len(white) - 1)
    assert torch.allclose(covariance, torch.eye(12), atol=1e-2)
    assert torch.allclose(white @ inverse + mean, images.flatten(1), atol=1e-3)
    assert torch.allclose(whitening, whitening.T, atol=1e-5)  # ZCA is the symmetric whitening


def test_zca_option_round_trips_pixels(tmp_path):
    tree = _write_tree(tmp_path / "tree", per_class=6, size=4)
    dataset = load_dataset(DataConfig(f"imagefolder:{tree}", zca=True), Store(tmp_path / "store"))
    assert dataset.transform.zca is not None
    pixels = dataset.transform.decode(dataset.test.images)
    assert torch.allclose(dataset.transform.encode(pixels), dataset.test.images, atol=1e-4)
