"""Datasets: batched fetching through ``__getitems__``, the task's collate_fn, DataLoader workers."""

import torch
from torch.utils.data import DataLoader

from trainwell.tasks.hand_pose.datasets import SAMPLE_KEYS, SyntheticHandPoseDataset, collate_hand_batch
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig

CFG = SyntheticHandsConfig()


def test_getitems_equals_stacked_getitem() -> None:
    dataset = SyntheticHandPoseDataset(CFG, seed=0, split="train", size=300, chunk_size=128)
    indices = [299, 0, 17, 17, 128]
    batched = dataset.__getitems__(indices)
    stacked = collate_hand_batch([dataset[i] for i in indices])
    assert set(batched) == set(SAMPLE_KEYS) == set(stacked)
    for key in SAMPLE_KEYS:
        assert torch.equal(batched[key], stacked[key]), key
    assert collate_hand_batch(batched) == batched  # an already batched dict passes through


def test_chunking_and_size_do_not_change_samples() -> None:
    small = SyntheticHandPoseDataset(CFG, seed=4, split="val", size=100, chunk_size=7)
    large = SyntheticHandPoseDataset(CFG, seed=4, split="val", size=1000)
    assert len(small) == 100 and len(large) == 1000
    for key in SAMPLE_KEYS:
        assert torch.equal(small.fields[key], large.fields[key][:100]), key


def test_dataloader_batches_with_workers_equal_the_main_process() -> None:
    dataset = SyntheticHandPoseDataset(CFG, seed=0, split="train", size=200)
    batch_sampler = [[5, 3, 199], [0, 1], [42]]
    main = list(DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_hand_batch))
    workers = list(DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_hand_batch, num_workers=2))
    for indices, a, b in zip(batch_sampler, main, workers, strict=True):
        for key in SAMPLE_KEYS:
            assert a[key].shape[0] == len(indices)
            assert torch.equal(a[key], b[key]), key
            assert torch.equal(a[key], dataset.fields[key][indices]), key
