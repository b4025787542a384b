"""Samples whose bytes encode their own identity, so a draw can be checked byte for byte.

A sample is identified by (rank, label, sample_id). Its pixels are a deterministic function
of that triple, its extras too, so any representative returned by a buffer can be traced
back to the exact insertion it came from, and a torn (half-written) slot fails the check.
"""
import numpy as np

HEADER = 6  # rank, label, sample id as 4 bytes: exact in uint8, float16 and float32


def sample_key(rank: int, label: int, sample_id: int) -> int:
    return (int(rank) << 40) | (int(label) << 24) | int(sample_id)


def make_samples(rank: int, labels, first_id: int, shape, dtype, num_extras: int = 0):
    """Ranks and labels below 256, samples of at least HEADER elements.

    Return (x, y, extras, ids) for len(labels) samples with ids first_id, first_id+1, ..."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    size = int(np.prod(shape))
    x = np.empty((n, size), dtype=dtype)
    for i in range(n):
        x[i] = pattern(rank, labels[i], ids[i], size, dtype)
    extras = None
    if num_extras:
        extras = np.stack([extras_pattern(rank, labels[i], ids[i], num_extras) for i in range(n)])
    return x.reshape((n, *shape)), labels, extras, ids


def pattern(rank: int, label: int, sample_id: int, size: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(sample_key(rank, label, sample_id))
    header = np.array([rank, label] + [(sample_id >> (8 * b)) & 0xFF for b in range(4)])
    body = rng.integers(0, 250, size=size)
    body[: min(HEADER, size)] = header[: min(HEADER, size)]
    return body.astype(dtype)


def extras_pattern(rank: int, label: int, sample_id: int, num_extras: int) -> np.ndarray:
    # in float64, then rounded once: the same bits whether the ids are Python or numpy integers
    return (np.arange(num_extras, dtype=np.float64) + float(rank) * 1000.0 + float(label) * 10.0
            + float(sample_id % 997) / 1000.0).astype(np.float32)


def identify(x_row: np.ndarray) -> tuple:
    """(rank, label, sample_id) that a sample claims in its header; verify with `check`."""
    flat = x_row.reshape(-1)
    rank, label, *id_bytes = (int(v) for v in flat[:HEADER])
    return rank, label, sum(b << (8 * i) for i, b in enumerate(id_bytes))


def check(x_row, y, extras_row=None, num_extras: int = 0) -> tuple:
    """Assert a drawn representative is byte-identical to what was inserted; return its identity."""
    rank, label, sample_id = identify(x_row)
    assert label == int(y), f"label {int(y)} but sample header says {label}"
    expected = pattern(rank, label, sample_id, x_row.size, x_row.dtype).reshape(x_row.shape)
    assert np.array_equal(x_row, expected), f"sample {(rank, label, sample_id)} is corrupted or torn"
    if num_extras:
        assert np.array_equal(extras_row, extras_pattern(rank, label, sample_id, num_extras)), \
            f"extras of sample {(rank, label, sample_id)} do not match"
    return rank, label, sample_id


def outputs(buf, r):
    """Output arrays for r representatives of `buf`, pre-filled with junk so stale rows show:
    x 255, y -1, extras -1.0 (None when the buffer stores no extras)."""
    return (np.full((r, *buf.sample_shape), 255, buf.dtype), np.full(r, -1, np.int64),
            np.full((r, buf.num_extras), -1.0, np.float32) if buf.num_extras else None)


def inclusion_p_value(counts, p):
    """Chi-square p-value for "every cell was included with the same probability p per trial".

    Each trial includes a fixed number of distinct cells, so a cell's count is Binomial(trials,
    p), and the counts sum to a constant: Pearson's statistic has mean cells * (1 - p), and
    rescaled by (cells - 1) / (cells * (1 - p)) it follows chi2(cells - 1)."""
    from scipy.stats import chi2

    counts = np.asarray(counts, dtype=np.float64)
    cells, expected = len(counts), counts.mean()
    stat = ((counts - expected) ** 2 / expected).sum() * (cells - 1) / (cells * (1 - p))
    return float(chi2.sf(stat, cells - 1))


def cell_index(fills) -> dict:
    """(rank, label, sample id) -> cell number, for slices filled with fills[rank][label] samples
    of each label (ids 0, 1, ... in insertion order, as make_samples gives them)."""
    index = {}
    for p, fill in enumerate(fills):
        first = 0
        for c, m in enumerate(fill):
            for i in range(first, first + m):
                index[(p, c, i)] = len(index)
            first += m
    return index


def draw_hits(buf, r: int, draws: int, index: dict) -> np.ndarray:
    """How often each cell of `index` was drawn in `draws` global draws of r; every draw returns
    min(r, cells) distinct cells."""
    hits = np.zeros(len(index), np.int64)
    ox, oy, _ = outputs(buf, r)
    for _ in range(draws):
        n = buf.sample(r, ox, oy)
        assert n == min(r, len(index))
        cells = [index[check(ox[i], oy[i])] for i in range(n)]
        assert len(set(cells)) == n, "a draw repeated a slot"
        hits[cells] += 1
    return hits


def add_unevenly(buf, rank: int, num_classes: int, shape, dtype, num_extras: int, count: int = 40) -> dict:
    """`count` samples of random classes (seeded by rank) added in uneven batches of 9, past the
    fill so replacements happen too; -> {sample id: label} of everything offered."""
    labels = np.random.default_rng(rank).integers(0, num_classes, size=count)
    inserted = {}
    for first in range(0, count, 9):
        x, y, e, ids = make_samples(rank, labels[first:first + 9], first, shape, dtype, num_extras)
        buf.add(x, y, e)
        inserted.update({int(i): int(c) for i, c in zip(ids, y)})
    return inserted
