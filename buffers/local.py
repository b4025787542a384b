"""LocalBuffer (the users' ``nil_local``): each rank rehearses from its own slice only."""
from .sampler import draw_slots
from .slice import SliceBuffer


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

    def _draw(self, r, out_x, out_y, out_extras, out_where):
        self._counters["filled_per_rank"][self._rank] = self._policy.filled_total
        _, slots = draw_slots(self._policy.blocks()[None, :], self._policy.stride, r, self._draw_rng)
        n = len(slots)
        self._storage.read(slots, out_x, out_y, out_extras)
        if out_where is not None:
            out_where[:n, 0] = self._rank
            out_where[:n, 1] = slots
        return n, n
