"""Insertion policies (the twin of cpp_loader's reservoir.cpp): given the labels of an
incoming batch, which slot (if any) each sample goes to, and the per-class counters. No data.
``AdaptiveReservoir`` (the default: M slots shared by the classes seen so far) or
``ClassBalancedReservoir`` (``policy='fixed'``: K x N).

Fixed insertion rule, per rank and per class c (N = slots_per_class): while ``filled_c < N`` the
sample goes to slot ``c*N + filled_c``; afterwards ``j`` is uniform in ``[0, seen_c)``
(``seen_c`` counting this sample) and the sample replaces slot ``c*N + j`` when ``j < N``. So
every sample of class c seen so far is held with probability ``N / seen_c``.

Adaptive insertion rule (the same as the native buffer's, cpp_loader/README.md): M slots per
rank; with k classes seen, the i-th class to arrive has quota ``M // k + (i < M % k)``. A
sample of class c (``seen_c`` counting it, ``held_c`` slots of c): (1) while the slice is not
full it takes the next free slot; (2) when full and ``held_c < quota_c``, the class most over
its quota (ties: the earliest) evicts one of its samples uniformly at random and c takes that
slot; (3) otherwise ``j = floor(u * seen_c)`` and it replaces the j-th slot of c (ascending)
when ``j < held_c``. Every sample of c seen so far is held with probability held_c / seen_c.

``j`` comes from one double per decision (``floor(u * seen_c)``), so the buffer depends
on the seed and the order of the data only, not on how the data was cut into batches.
"""
import numpy as np


class ClassBalancedReservoir:
    """Which slot each incoming sample takes; counts seen/filled per class. No data."""

    def __init__(self, num_classes: int, slots_per_class: int, rng: np.random.Generator):
        self.num_classes = num_classes
        self.slots_per_class = slots_per_class
        self.stride = slots_per_class  # the sampler's block b starts at slot b * stride
        self.rng = rng
        self.seen = np.zeros(num_classes, dtype=np.int64)
        self.filled = np.zeros(num_classes, dtype=np.int64)
        self.filled_total = 0

    def blocks(self) -> np.ndarray:
        """Fill counts of the blocks of consecutive filled slots: one per class."""
        return self.filled

    def counters(self):
        """(classes, seen, filled) per class, in label order."""
        return np.arange(self.num_classes, dtype=np.int64), self.seen.copy(), self.filled.copy()

    def restore(self, labels, classes, seen, filled):
        K, N = self.num_classes, self.slots_per_class
        if not np.array_equal(classes, np.arange(K)) or seen.shape != (K,) or (seen < 0).any():
            raise ValueError(f"state counters do not describe classes 0..{K - 1}")
        if not np.array_equal(filled, np.minimum(seen, N)):
            raise ValueError("state counters are inconsistent: filled != min(seen, slots_per_class)")
        # class c owns slots [c*N, (c+1)*N): its first `filled` hold label c, the rest are empty
        want = np.where(np.arange(N)[None, :] < filled[:, None], np.arange(K)[:, None], -1).reshape(-1)
        wrong = np.flatnonzero(np.asarray(labels).reshape(-1) != want)
        if len(wrong):
            s = int(wrong[0])
            raise ValueError(f"state labels are inconsistent: slot {s} holds label {int(labels[s])}, "
                             f"expected {int(want[s])}")
        self.seen[:] = seen
        self.filled[:] = filled
        self.filled_total = int(filled.sum())

    def place(self, y: np.ndarray):
        """-> (src, dst): sample src[i] of the batch goes to slot dst[i]; a slot taken twice
        in one batch goes to the later sample, exactly as one-at-a-time insertion would."""
        K, N = self.num_classes, self.slots_per_class
        y = y.astype(np.int64, copy=False)
        n = len(y)
        counts = np.bincount(y, minlength=K)
        order = np.argsort(y, kind="stable")
        first = np.cumsum(counts) - counts
        rank_in_class = np.empty(n, dtype=np.int64)
        rank_in_class[order] = np.arange(n) - first[y[order]]
        seen = self.seen[y] + rank_in_class + 1  # seen_c including this sample
        slots = y * N + seen - 1  # right for the filling samples
        late = np.flatnonzero(seen > N)
        if len(late):
            s = seen[late]
            j = np.minimum((self.rng.random(len(late)) * s).astype(np.int64), s - 1)
            slots[late] = np.where(j < N, y[late] * N + j, -1)
        self.seen += counts
        np.minimum(self.seen, N, out=self.filled)
        self.filled_total = int(self.filled.sum())
        if not len(late):
            return None, slots  # every sample, in order: the fast path
        return last_write_wins(slots)


def last_write_wins(slots: np.ndarray):
    """(src, dst) of the samples that keep a slot: of several samples sent to one slot in a
    batch (slot -1: not kept), the later one, exactly as one-at-a-time insertion would."""
    src = np.flatnonzero(slots >= 0)
    dst = slots[src]
    if len(dst) > 1:
        _, first_from_end = np.unique(dst[::-1], return_index=True)
        last = len(dst) - 1 - first_from_end
        src, dst = src[last], dst[last]
    return src, dst


class AdaptiveReservoir:
    """The adaptive policy (module docstring): M slots shared by the classes seen so far,
    labels discovered as they come. Which slot each incoming sample takes; no data."""

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.stride = capacity  # one block, [0, filled_total)
        self.rng = rng
        self.classes: list[int] = []        # labels, in order of arrival
        self.index: dict[int, int] = {}     # label -> position in classes
        self.seen: list[int] = []
        self.slots: list[list[int]] = []    # per class, ascending
        self.filled_total = 0
        self._table = None  # _steady's arrays, while rules 1-2 leave the slots as they are

    def quota(self, i: int) -> int:
        k = len(self.classes)
        return self.capacity // k + (i < self.capacity % k)

    def blocks(self) -> np.ndarray:
        return np.array([self.filled_total], dtype=np.int64)

    def counters(self):
        """(classes, seen, filled) per class, in order of arrival."""
        return (np.array(self.classes, dtype=np.int64), np.array(self.seen, dtype=np.int64),
                np.array([len(s) for s in self.slots], dtype=np.int64))

    def _most_over_quota(self) -> int:
        excess = [len(s) - self.quota(i) for i, s in enumerate(self.slots)]
        return int(np.argmax(excess))  # the first of the largest

    def _steady(self, y: np.ndarray):
        """The whole batch under rule 3 (full slice, known classes, none below its quota),
        vectorised: the same random numbers, in the same order, as one sample at a time; None
        when some sample needs rule 1 or 2."""
        if self.filled_total < self.capacity or not self.classes:
            return None
        if self._table is None:  # rebuilt only after rules 1-2 or a restore changed the slots
            k = len(self.classes)
            held = np.array([len(s) for s in self.slots], dtype=np.int64)
            table = np.zeros((k, max(1, int(held.max()))), dtype=np.int64)
            for c, slots in enumerate(self.slots):
                table[c, :len(slots)] = slots
            keys = np.array(self.classes, dtype=np.int64)
            order = np.argsort(keys)
            below = held < np.array([self.quota(c) for c in range(k)])
            self._table = (keys[order], order, held, table, below)
        keys, order, held, table, below = self._table
        at = np.minimum(np.searchsorted(keys, y), len(keys) - 1)
        if not np.array_equal(keys[at], y):
            return None  # a new class
        cls = order[at]
        if below[cls].any():
            return None
        counts = np.bincount(cls, minlength=len(keys))
        by_class = np.argsort(cls, kind="stable")
        rank = np.empty(len(cls), dtype=np.int64)
        rank[by_class] = np.arange(len(cls)) - (np.cumsum(counts) - counts)[cls[by_class]]
        seen = np.asarray(self.seen, dtype=np.int64)
        after = seen[cls] + rank + 1  # seen_c counting this sample
        j = np.minimum((self.rng.random(len(cls)) * after).astype(np.int64), after - 1)
        keep = j < held[cls]
        dst = np.full(len(cls), -1, dtype=np.int64)
        dst[keep] = table[cls[keep], j[keep]]
        self.seen = (seen + counts).tolist()
        return dst

    def place(self, y: np.ndarray):
        """-> (src, dst) as ClassBalancedReservoir.place (the later sample wins a slot)."""
        dst = self._filling(y)
        if dst is not None:
            return None, dst  # every sample, in order: the fast path
        dst = self._steady(y)
        if dst is None:
            dst = self._one_by_one(y)
        return last_write_wins(dst)

    def _filling(self, y: np.ndarray):
        """The whole batch under rule 1 (it fits in the free slots), vectorised; else None."""
        if self.filled_total + len(y) > self.capacity:
            return None
        labels = y.tolist()
        for label in dict.fromkeys(labels):  # new classes, in order of first appearance
            if label not in self.index:
                self.index[label] = len(self.classes)
                self.classes.append(label)
                self.seen.append(0)
                self.slots.append([])
        cls = np.fromiter(map(self.index.__getitem__, labels), dtype=np.int64, count=len(labels))
        dst = np.arange(self.filled_total, self.filled_total + len(y), dtype=np.int64)
        for c in np.unique(cls).tolist():
            mine = dst[cls == c]
            self.slots[c].extend(mine.tolist())
            self.seen[c] += len(mine)
        self.filled_total += len(y)
        self._table = None
        return dst

    def _one_by_one(self, y: np.ndarray) -> np.ndarray:
        """Rules 1-3 for each sample in turn: its slot, or -1."""
        self._table = None
        dst = np.full(len(y), -1, dtype=np.int64)
        for i, label in enumerate(y.tolist()):
            c = self.index.get(label)
            if c is None:
                c = self.index[label] = len(self.classes)
                self.classes.append(label)
                self.seen.append(0)
                self.slots.append([])
            self.seen[c] += 1
            mine = self.slots[c]
            if self.filled_total < self.capacity:  # (1) the next free slot
                mine.append(self.filled_total)
                dst[i] = self.filled_total
                self.filled_total += 1
            elif len(mine) < self.quota(c):  # (2) a slot of the most over-quota class
                victim = self.slots[self._most_over_quota()]
                slot = victim.pop(min(int(self.rng.random() * len(victim)), len(victim) - 1))
                mine.insert(int(np.searchsorted(mine, slot)), slot)
                dst[i] = slot
            else:  # (3) reservoir within the class
                j = min(int(self.rng.random() * self.seen[c]), self.seen[c] - 1)
                if j < len(mine):
                    dst[i] = mine[j]
        return dst

    def restore(self, labels, classes, seen, filled):
        """Rebuild the per-class slot lists from the slots' labels; ValueError if inconsistent."""
        classes, seen = [int(c) for c in classes], [int(s) for s in seen]
        if len(set(classes)) != len(classes) or any(c < 0 for c in classes) \
                or len(seen) != len(classes) or len(filled) != len(classes):
            raise ValueError("state counters are inconsistent: classes must be distinct labels >= 0, "
                             "with one seen and one filled count each")
        used = np.flatnonzero(labels >= 0)
        total = len(used)
        if total and used[-1] != total - 1:
            raise ValueError("state labels are inconsistent: filled slots must come first")
        index = {c: i for i, c in enumerate(classes)}
        slots = [[] for _ in classes]
        for s, label in enumerate(labels[:total].tolist()):
            if label not in index:
                raise ValueError(f"state labels are inconsistent: slot {s} holds label {label}, "
                                 f"which is not among the classes")
            slots[index[label]].append(s)
        for i, c in enumerate(classes):
            if len(slots[i]) != int(filled[i]) or seen[i] < len(slots[i]):
                raise ValueError(f"state counters are inconsistent for class {c}: seen={seen[i]}, "
                                 f"filled={int(filled[i])}, {len(slots[i])} slots hold it")
        self.classes, self.index, self.seen, self.slots = classes, index, seen, slots
        self.filled_total = total
        self._table = None
