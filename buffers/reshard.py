"""Re-sharding buffer slices for a different number of ranks (elastic resume).

A checkpoint written by N ranks holds N slices; a job on M ranks pools them and gives each new
rank its share, class by class, with the reservoir counters carried over. Every new rank
computes the same plan from the same pooled slices (no randomness but a fixed seed), then keeps
its own part. Works on the states of every buffer kind (``cpp_loader.Buffer`` and the Python
ones), each slice read through its labels (the class of every slot).

What is preserved, exactly:

* the pooled samples (with their extras) as a multiset, when the new total capacity can hold
  them (and, for ``policy='fixed'``, every class fits its new K x N' blocks);
* each class's total ``seen`` count over all ranks (split over the new ranks in proportion to
  the samples each receives, so every class keeps its inclusion probability held_c / seen_c);
* the order in which the classes first arrived (which decides who gets a remainder slot).

What is approximated:

* when the capacity shrinks, classes are cut down as the adaptive policy's eviction would do:
  the class most over its share of the new total capacity (ties: the earliest) loses one of its
  samples, uniformly at random (seeded), until the pool fits; within a class the survivors are
  still a uniform subset of what it had seen, so inclusion becomes held'_c / seen_c. The fixed
  policy cuts each class to its W' x N' slots the same way;
* a class is dealt round-robin over the new ranks, so a rank's share differs from an equal one
  by at most one sample per class; the adaptive rule evens this out lazily as new samples come;
* the per-rank split of ``seen``: a new rank did not see those samples, and later insertions
  on it use its share as if it had (the fixed policy, whose counters must satisfy filled =
  min(seen, N), gives a rank with free slots of a class exactly its held count);
* the insertion and draw generators start afresh from (seed, new rank).
"""
from __future__ import annotations

import numpy as np


def pool(states: list[dict]) -> dict:
    """The slices of all old ranks as one pool: per class (in order of first arrival) the
    held samples, their extras, and the total seen."""
    classes, first, seen = [], {}, {}
    rows = {}
    for rank, state in enumerate(states):
        for position, (label, count) in enumerate(zip(np.asarray(state["classes"]).tolist(),
                                                      np.asarray(state["seen_per_class"]).tolist())):
            if label not in seen:
                classes.append(label)
                seen[label] = 0
            first[label] = min(first.get(label, (position, rank)), (position, rank))
            seen[label] += int(count)
        labels = np.asarray(state["labels"])
        for slot in np.flatnonzero(labels >= 0):
            rows.setdefault(int(labels[slot]), []).append((rank, int(slot)))
    classes.sort(key=lambda c: (first[c], c))
    return {"classes": classes, "seen": seen, "rows": {c: rows.get(c, []) for c in classes}}


def _quota(capacity: int, k: int, i: int) -> int:
    return capacity // k + (i < capacity % k)


def plan(pooled: dict, world: int, capacity: int, slots_per_class: int | None, seed: int) -> dict:
    """Which pooled rows each new rank gets: {label: [rows of rank 0, rows of rank 1, ...]}.
    `slots_per_class` set: the fixed policy (at most that many of a class per rank)."""
    rng = np.random.default_rng([seed, world, 0x5E5A])
    classes = pooled["classes"]
    kept = {c: list(pooled["rows"][c]) for c in classes}
    total_capacity = world * capacity

    def evict(c):
        kept[c].pop(int(rng.integers(len(kept[c]))))

    if slots_per_class is not None:
        for c in classes:
            while len(kept[c]) > world * slots_per_class:
                evict(c)
    else:
        k = len(classes)
        while sum(len(v) for v in kept.values()) > total_capacity:
            excess = [len(kept[c]) - _quota(total_capacity, k, i) for i, c in enumerate(classes)]
            evict(classes[int(np.argmax(excess))])

    room = [capacity] * world
    shares, start = {}, 0
    for c in classes:
        per_rank = [[] for _ in range(world)]
        rank = start
        for row in kept[c]:
            for _ in range(world):  # the next rank with room (there is one: the pool fits)
                full = room[rank] == 0 or (slots_per_class is not None and len(per_rank[rank]) == slots_per_class)
                if not full:
                    break
                rank = (rank + 1) % world
            per_rank[rank].append(row)
            room[rank] -= 1
            rank = (rank + 1) % world
        shares[c], start = per_rank, rank
    return shares


def _split_seen(total: int, held: list[int], slots_per_class: int | None) -> list[int]:
    """`total` seen samples over the new ranks in proportion to what they hold (largest
    remainder), each at least its held count; fixed: a rank with free slots gets exactly it."""
    world = len(held)
    if slots_per_class is not None:
        out = list(held)
        full = [r for r in range(world) if held[r] == slots_per_class]
        extra = total - sum(held)
        if full:
            for i, r in enumerate(full):
                out[r] += extra // len(full) + (i < extra % len(full))
        return out
    weights = np.asarray(held, np.float64) if sum(held) else np.ones(world)
    exact = total * weights / weights.sum()
    out = np.floor(exact).astype(np.int64)
    for r in np.argsort(-(exact - out), kind="stable")[: total - int(out.sum())]:
        out[r] += 1
    out = np.maximum(out, held)
    return out.tolist()


def reshard(states: list[dict], fresh: dict, rank: int, world: int, seed: int = 0) -> tuple[dict, dict]:
    """(state for new rank `rank` of `world`, summary): the old ranks' `states` pooled and
    re-sharded into `fresh` (this rank's empty buffer state, which gives the layout, kind and
    generators)."""
    capacity = int(fresh["capacity"])
    fixed = fresh.get("policy", "fixed") == "fixed"
    n_slots = fresh["slots_per_class"] if fixed else None
    pooled = pool(states)
    shares = plan(pooled, world, capacity, n_slots, seed)
    samples = np.array(fresh["samples"], copy=True)
    labels = np.full(capacity, -1, dtype=np.int64)
    extras = None if fresh["extras"] is None else np.array(fresh["extras"], copy=True)
    classes, seen, filled = [], [], []
    slot = 0
    for c in pooled["classes"]:
        held = [len(share) for share in shares[c]]
        my_seen = _split_seen(pooled["seen"][c], held, n_slots)[rank]
        mine = shares[c][rank]
        for i, (old_rank, old_slot) in enumerate(mine):
            target = c * n_slots + i if fixed else slot + i
            samples[target] = states[old_rank]["samples"][old_slot]
            labels[target] = c
            if extras is not None and extras.shape[1]:  # no extras: some kinds store None
                extras[target] = states[old_rank]["extras"][old_slot]
        slot += len(mine)
        if fixed or my_seen:
            classes.append(c)
            seen.append(my_seen)
            filled.append(len(mine))
    if fixed:  # the fixed layout lists every class 0..K-1
        order = {c: i for i, c in enumerate(classes)}
        K = len(np.asarray(fresh["classes"]))
        seen = [seen[order[c]] if c in order else 0 for c in range(K)]
        filled = [filled[order[c]] if c in order else 0 for c in range(K)]
        classes = list(range(K))
    state = dict(fresh, samples=samples, labels=labels, extras=extras, classes=np.asarray(classes, np.int64),
                 seen_per_class=np.asarray(seen, np.int64), filled_per_class=np.asarray(filled, np.int64))
    before = sum(len(v) for v in pooled["rows"].values())
    after = sum(len(share) for shares_c in shares.values() for share in shares_c)
    return state, {"held_before": before, "held_after": after,
                   "capacity_before": sum(int(s["capacity"]) for s in states), "capacity_after": world * capacity}
