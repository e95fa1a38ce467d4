"""A bounded, thread-safe store of values made once: the app keeps its models, references, runs,
drawn columns, canvases and mechanism views in one of these each."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable


class LRU:
    """key → value, made on a miss by `make()`; past `limit` entries the least recently used goes.
    The lock guards the dict (Streamlit sessions rerun in parallel threads), not `make`, which may
    take long: two threads missing the same key both make it, and the later one is kept."""

    def __init__(self, limit: int = 64):
        self.limit = int(limit)
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return self.put(key, make())

    def peek(self, key: Hashable, default=None):
        """The value if present (counts as a use), else `default`; makes nothing."""
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Hashable, value):
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.limit:
                self._data.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return key in self._data
