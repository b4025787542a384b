"""LocalBuffer (the users' ``nil_local``): each rank rehearses from its own slice only."""
import numpy as np

from .reservoir import SliceBuffer


class LocalBuffer(SliceBuffer):
    """A draw takes n = min(r, own filled) distinct slots uniformly from this rank's slice.

    Nothing is exchanged after construction (which checks that all ranks passed the same
    shapes); ``world_size`` is reported, and ``stats()['filled_per_rank']`` holds -1 for the
    ranks it knows nothing about, ``global_filled`` is -1.

    Example::

        buf = LocalBuffer(num_classes=10, slots_per_class=50, sample_shape=(3, 32, 32))
        buf.add(x_u8, y)
        n = buf.sample(32, out_x, out_y)
    """

    KIND = "buffers.LocalBuffer/1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._counters["filled_per_rank"] = [-1] * self._world_size
        self._counters["global_filled"] = -1

    def _draw(self, r, out_x, out_y, out_extras):
        blocks = self._policy.blocks()
        total = self._policy.filled_total
        self._counters["filled_per_rank"][self._rank] = total
        n = min(r, total)
        if n == 0:
            return 0, 0
        slots = self._slots_of(blocks, self._draw_rng.choice(total, n, replace=False))
        np.take(self._samples, slots, axis=0, out=out_x[:n], mode="clip")
        self._draw_labels(slots, out_y[:n])
        if out_extras is not None:
            np.take(self._extras, slots, axis=0, out=out_extras[:n], mode="clip")
        return n, n
