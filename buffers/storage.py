"""One rank's slice as plain arrays (the twin of cpp_loader's storage.cpp): samples, labels
(-1: empty) and extras per slot. Storage knows where a slot lives and copies rows; which slot
a sample takes is the policy's business (reservoir.py)."""
import numpy as np


class SliceStorage:
    def __init__(self, capacity: int, sample_shape: tuple, dtype: np.dtype, num_extras: int):
        # Written now, so the pages are touched here and not during the first inserts.
        self.samples = np.zeros((capacity, *sample_shape), dtype=dtype)
        self.labels = np.full(capacity, -1, dtype=np.int64)
        self.extras = np.zeros((capacity, num_extras), dtype=np.float32) if num_extras else None
        self.row_bytes = self.samples[0].nbytes + 4 * num_extras

    def write(self, src, dst: np.ndarray, x, y, extras) -> None:
        """Rows src of the batch (None: all, in order) into slots dst."""
        pick = slice(None) if src is None else src
        self.samples[dst] = x[pick]
        self.labels[dst] = y[pick]
        if self.extras is not None:
            self.extras[dst] = extras[pick]

    def read(self, slots: np.ndarray, out_x, out_y, out_extras) -> None:
        """Slots into the first len(slots) rows of the outputs."""
        m = len(slots)
        np.take(self.samples, slots, axis=0, out=out_x[:m], mode="clip")
        np.take(self.labels, slots, out=out_y[:m], mode="clip")
        if out_extras is not None:
            np.take(self.extras, slots, axis=0, out=out_extras[:m], mode="clip")

    def write_extras(self, slots: np.ndarray, extras) -> None:
        self.extras[slots] = extras

    def arrays(self) -> dict:
        """Copies of the three regions (state())."""
        return {"samples": self.samples.copy(), "labels": self.labels.copy(),
                "extras": None if self.extras is None else self.extras.copy()}

    def load(self, samples, labels, extras) -> None:
        if np.shape(samples) != self.samples.shape or np.shape(labels) != self.labels.shape:
            raise ValueError("state arrays do not match the buffer's shapes")
        if self.extras is not None and np.shape(extras) != self.extras.shape:
            raise ValueError("state arrays do not match the buffer's shapes")
        np.copyto(self.samples, samples)
        np.copyto(self.labels, labels)
        if self.extras is not None:
            np.copyto(self.extras, extras)
