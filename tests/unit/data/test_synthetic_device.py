"""Synthetic batches made with torch on the training device: the host generator's hidden model and distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recframe.data.prefetch import DevicePrefetcher
from recframe.data.source import SyntheticSource
from recframe.data.synthetic import SyntheticConfig, SyntheticCriteo
from recframe.data.synthetic_dataset import BatchRequest, SyntheticDataset
from recframe.data.synthetic_device import DeviceSynthesizer, hash_uniforms
from recframe.data.synthetic_hash import hash_uniforms as host_hash_uniforms
from recframe.data.synthetic_hash import zipf_ids
from recframe.training.datamodule import RecDataModule
from recframe.vocab import GenerateOn

CPU = torch.device("cpu")
MULTI_HOT = SyntheticConfig(num_dense_features=5, table_sizes=(50, 1000, 7, 30_000), ids_per_feature=(1, 3, 2, 9))
VARIABLE = SyntheticConfig(num_dense_features=3, table_sizes=(100, 200, 300), ids_per_feature=(4, 1, 6),
                           variable_lengths=True, empty_bag_probability=0.25, num_tasks=3)


def test_hash_uniforms_are_the_host_generators_bit_for_bit() -> None:
    ids = np.random.default_rng(0).integers(0, 2**63 - 1, size=4096)
    salt = np.uint64(0xDEADBEEF12345678)
    host = host_hash_uniforms(ids, salt)
    device = hash_uniforms(torch.from_numpy(ids), torch.tensor(int(salt) - (1 << 64)))
    np.testing.assert_array_equal(device.numpy(), host)


@pytest.mark.parametrize("exponent", [0.0, 1.0, 1.05])
def test_zipf_ids_match_the_host_formula(exponent: float) -> None:
    config = SyntheticConfig(table_sizes=(10, 1000, 123_457), ids_per_feature=(1, 2, 3), zipf_exponent=exponent)
    maker = DeviceSynthesizer(SyntheticCriteo(config, seed=0), CPU)
    layout = maker._layout(64)
    u = torch.rand(layout.rows.shape, generator=torch.Generator().manual_seed(1))
    got = maker._zipf(u, layout)
    expected = zipf_ids(u.numpy(), layout.rows.numpy(), exponent)
    assert (got.numpy() != expected).mean() < 1e-3  # pow in torch vs numpy: an id may differ at a boundary
    assert int(got.min()) >= 0 and bool((got < layout.rows).all())


@pytest.mark.parametrize("config", [MULTI_HOT, VARIABLE], ids=["multi_hot", "variable_bags"])
def test_labels_come_from_the_host_generators_hidden_model(config: SyntheticConfig) -> None:
    generator = SyntheticCriteo(config, seed=7)
    batch, logits = DeviceSynthesizer(generator, CPU).batch_and_logits(index=3, batch_size=256)
    host_logits = generator.hidden_logits(batch)  # the host's model, from the batch's dense values and ids
    torch.testing.assert_close(logits.squeeze(1) if config.num_tasks == 1 else logits, host_logits.float(),
                               atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("config", [MULTI_HOT, VARIABLE], ids=["multi_hot", "variable_bags"])
def test_batches_are_well_formed_and_reproducible(config: SyntheticConfig) -> None:
    maker = DeviceSynthesizer(SyntheticCriteo(config, seed=1), CPU)
    a, b, other = maker.batch(5, 128), maker.batch(5, 128), maker.batch(6, 128)
    kjt = a.sparse_features
    assert kjt.keys() == config.feature_names() and kjt.stride() == 128
    lengths = kjt.lengths().view(config.num_sparse_features, 128)
    assert kjt.length_per_key() == lengths.sum(1).tolist() and int(lengths.sum()) == kjt.values().numel()
    bags = torch.tensor(config.bag_sizes())[:, None]
    assert bool((lengths <= bags).all()) and (config.variable_lengths or bool((lengths == bags).all()))
    for key, rows in zip(kjt.keys(), config.table_sizes, strict=True):
        ids = kjt[key].values()
        assert ids.numel() == 0 or (int(ids.min()) >= 0 and int(ids.max()) < rows)
    assert torch.equal(a.sparse_features.values(), b.sparse_features.values()) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.dense_features, b.dense_features)
    assert not torch.equal(a.dense_features, other.dense_features)


def test_a_batch_is_the_same_whatever_was_made_before_it() -> None:
    generator = SyntheticCriteo(MULTI_HOT, seed=2)
    first = DeviceSynthesizer(generator, CPU)
    assert first.chunk_size(64) == 8 and first.chunk_size(200_000) == 1
    in_order = [first.batch(i, 64) for i in range(20)]
    other = DeviceSynthesizer(generator, CPU)
    for i in (17, 3, 9, 8, 0, 19):  # resumed at i, out of order, across chunk boundaries
        b = other.batch(i, 64)
        assert torch.equal(b.sparse_features.values(), in_order[i].sparse_features.values()), i
        assert torch.equal(b.labels, in_order[i].labels) and torch.equal(b.dense_features, in_order[i].dense_features)
    distinct = {tuple(b.dense_features[0].tolist()) for b in in_order}
    assert len(distinct) == 20  # every batch of a chunk is its own draw


def test_device_batches_have_the_host_batches_distributions() -> None:
    config = SyntheticConfig(table_sizes=(1000,) * 4, ids_per_feature=(1, 2, 1, 5), zipf_exponent=1.05)
    generator = SyntheticCriteo(config, seed=3)
    maker = DeviceSynthesizer(generator, CPU)
    host = [generator.batch(i, 4096) for i in range(3)]
    device = [maker.batch(i, 4096) for i in range(3)]

    def stats(batches: list) -> tuple[float, float, float, float]:
        labels = torch.cat([b.labels for b in batches])
        dense = torch.cat([b.dense_features for b in batches])
        ids = torch.cat([b.sparse_features["cat_0"].values() for b in batches]).float()
        return float(labels.mean()), float(dense.mean()), float(dense.std()), float((ids == 0).float().mean())

    for h, d in zip(stats(host), stats(device), strict=True):
        assert abs(h - d) < 0.02 * max(1.0, abs(h)), (stats(host), stats(device))


def test_a_request_stream_names_the_host_streams_batches() -> None:
    generator = SyntheticCriteo(SyntheticConfig(table_sizes=(10,) * 2), seed=0)
    requests = list(SyntheticDataset(generator, 8, num_batches=3, rank=1, world_size=2, first_batch=4,
                                     requests=True))
    assert requests == [BatchRequest(9, 8), BatchRequest(11, 8), BatchRequest(13, 8)]


def test_datamodule_makes_requested_batches_on_the_device() -> None:
    generator = SyntheticCriteo(SyntheticConfig(table_sizes=(10,) * 3), seed=0)
    source = SyntheticSource(generator, batch_size=16, num_val_batches=2, generate_on=GenerateOn.device)
    module = RecDataModule(source, num_workers=2)
    loader = module.train_dataloader()
    assert loader.num_workers == 0  # requests cost nothing to make: no worker processes
    request = next(iter(loader))
    assert request == BatchRequest(0, 16)
    batch = module.transfer_batch_to_device(request, CPU, 0)
    expected = DeviceSynthesizer(generator, CPU).batch(0, 16)
    assert torch.equal(batch.sparse_features.values(), expected.sparse_features.values())
    assert torch.equal(batch.labels, expected.labels)


def test_host_generation_stays_the_cpu_default() -> None:
    generator = SyntheticCriteo(SyntheticConfig(table_sizes=(10,) * 3), seed=0)
    source = SyntheticSource(generator, batch_size=16, num_val_batches=2, generate_on=GenerateOn.auto)
    batch = next(iter(RecDataModule(source).train_dataloader()))
    assert torch.equal(batch.labels, generator.batch(0, 16).labels)


def test_prefetcher_off_cuda_materializes_in_order_and_keeps_the_loaders_length() -> None:
    fetch = DevicePrefetcher([1, 2, 3], CPU, lambda item, device: torch.tensor([item], device=device))
    assert [int(t) for t in fetch] == [1, 2, 3] and len(fetch) == 3
    with pytest.raises(TypeError):
        len(DevicePrefetcher(iter([1]), CPU, lambda item, device: item))
