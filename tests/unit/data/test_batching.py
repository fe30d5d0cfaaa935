import numpy as np
import pytest
import torch

from seqtag.data.batching import PAD_TARGET, EncodedDataset, EncodedSentence, collate
from seqtag.data.sampling import LengthBucketSampler


def _sentence(index, length, with_chars=False):
    words = np.arange(2, 2 + length)
    chars = [np.array([3] * (1 + k % 3)) for k in range(length)] if with_chars else None
    return EncodedSentence(index, words, np.zeros(length, dtype=np.int64), chars, ("O",) * length)


def test_collate_pads_to_longest_and_masks():
    batch = collate([_sentence(0, 3, True), _sentence(1, 5, True)])
    assert batch["words"].shape == (2, 5)
    assert batch["lengths"].tolist() == [3, 5]
    assert batch["mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch["tags"][0, 3:].tolist() == [PAD_TARGET, PAD_TARGET]
    assert batch["words"][0, 3:].tolist() == [0, 0]
    assert batch["chars"].shape == (2, 5, 3)
    assert batch["chars"][0, 3:].abs().sum() == 0
    assert batch["index"].tolist() == [0, 1]
    assert batch["gold"] == [("O",) * 3, ("O",) * 5]


def _lengths(n, seed=0):
    return np.random.default_rng(seed).integers(1, 60, size=n).tolist()


def test_training_batches_cover_all_and_change_per_epoch():
    lengths = _lengths(1000)
    sampler = LengthBucketSampler(lengths, 32, shuffle=True, seed=1, num_replicas=1, rank=0)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert len(first) == len(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_bucketing_limits_padding():
    lengths = _lengths(5000)
    sampler = LengthBucketSampler(lengths, 32, shuffle=True, num_replicas=1, rank=0)
    assert sampler.padding_efficiency() > 0.95


@pytest.mark.parametrize("world", [2, 3])
def test_training_shards_are_distinct_and_equally_long(world):
    lengths = _lengths(1001)
    shards = [
        list(LengthBucketSampler(lengths, 32, shuffle=True, seed=5, num_replicas=world, rank=r))
        for r in range(world)
    ]
    assert len({len(s) for s in shards}) == 1
    assert all(
        len(s)
        == len(LengthBucketSampler(lengths, 32, shuffle=True, seed=5, num_replicas=world, rank=0))
        for s in shards
    )
    seen = [i for shard in shards for b in shard for i in b]
    assert set(seen) == set(range(1001))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_shards_cover_every_sentence_once(world):
    lengths = _lengths(2077)
    shards = [
        list(LengthBucketSampler(lengths, 64, shuffle=False, num_replicas=world, rank=r))
        for r in range(world)
    ]
    seen = [i for shard in shards for b in shard for i in b]
    assert sorted(seen) == list(range(2077))
    for rank, shard in enumerate(shards):
        sampler = LengthBucketSampler(lengths, 64, shuffle=False, num_replicas=world, rank=rank)
        assert len(shard) == len(sampler)


def test_dataloader_with_sampler_yields_batches():
    dataset = EncodedDataset([_sentence(i, 1 + i % 7) for i in range(50)])
    sampler = LengthBucketSampler(dataset.lengths, 8, shuffle=False, num_replicas=1, rank=0)
    loader = torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, collate_fn=collate
    )
    indices = torch.cat([b["index"] for b in loader]).tolist()
    assert sorted(indices) == list(range(50))


def test_evaluation_batches_close_early_rather_than_pad():
    # Long-tailed lengths, like real text: many short sentences, a few very long ones.
    lengths = np.random.default_rng(0).lognormal(2.8, 0.6, size=2000).astype(int) + 1
    sampler = LengthBucketSampler(lengths, 256, shuffle=False, num_replicas=1, rank=0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(p for b in batches for p in b) == list(range(len(lengths)))
    assert all(len(b) <= 256 for b in batches)
    # In length order, every batch but the last holds at least min_eval_batch sentences.
    assert all(len(b) >= sampler.min_eval_batch for b in batches[:-1])
    fixed = [sorted(lengths)[i : i + 256] for i in range(0, len(lengths), 256)]
    fixed_efficiency = sum(lengths) / sum(max(b) * len(b) for b in fixed)
    assert sampler.padding_efficiency() > 0.9 > fixed_efficiency


def test_token_cap_bounds_training_batches_and_keeps_their_number_fixed():
    lengths = [5] * 300 + [40, 60, 200, 900, 1200]  # a few document-length "sentences"
    sampler = LengthBucketSampler(
        lengths, 32, shuffle=True, seed=3, num_replicas=1, rank=0, max_tokens=1000
    )
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(p for b in batches for p in b) == list(range(len(lengths)))
        for batch in batches:
            padded = len(batch) * max(lengths[p] for p in batch)
            assert padded <= 1000 or len(batch) == 1  # a lone over-long sentence still runs
    uncapped = LengthBucketSampler(lengths, 32, shuffle=True, seed=3, num_replicas=1, rank=0)
    assert max(len(b) * max(lengths[p] for p in b) for b in uncapped) > 1000


def test_no_token_cap_leaves_the_batches_as_they_were():
    lengths = list(np.random.default_rng(1).integers(1, 60, size=500))
    plain = LengthBucketSampler(lengths, 16, shuffle=True, seed=5, num_replicas=1, rank=0)
    huge_cap = LengthBucketSampler(
        lengths, 16, shuffle=True, seed=5, num_replicas=1, rank=0, max_tokens=10**9
    )
    assert [b for b in plain] == [b for b in huge_cap]
