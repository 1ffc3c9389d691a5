"""Count the array calls a piece of code makes on the ``strict`` backend.

On a GPU every array operation is (at least) one kernel launch, so the number of
calls, not the arithmetic, bounds the speed of a small model. ``array_api_strict``
is a stand-in with the same interface: wrapping every function of its namespace and
every operator of its array type counts exactly the calls minivae makes, with no
timing involved, so the count is the same on every machine and every run.

Counted: every function of the namespace (``xp.exp``, ``xp.matmul``, ``xp.full``, ...)
and every array operator and method (``a + b``, ``a[key]``, ``a[key] = v``, ``a += b``,
``float(a)``, ...), each call once even where the library calls itself inside it.
Not counted: questions about dtypes (``isdtype``, ``finfo``, ``result_type``, ...),
which run no kernel, and attribute reads (``.shape``, ``.dtype``).

    with count_array_calls() as counts:
        train_step(...)
    sum(counts.values()), counts.most_common(5)
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter

# namespace functions that inspect dtypes or devices and launch nothing
_NOT_COMPUTE = {
    "isdtype",
    "finfo",
    "iinfo",
    "result_type",
    "can_cast",
    "Device",
    "__array_namespace_info__",
    "get_array_api_strict_flags",
    "set_array_api_strict_flags",
    "reset_array_api_strict_flags",
    "ArrayAPIStrictFlags",
}
# array methods that are Python's object machinery, not array operations
_OBJECT_MACHINERY = {
    "__init__",
    "__new__",
    "__init_subclass__",
    "__subclasshook__",
    "__getattribute__",
    "__setattr__",
    "__delattr__",
    "__dir__",
    "__repr__",
    "__str__",
    "__format__",
    "__hash__",
    "__sizeof__",
    "__reduce__",
    "__reduce_ex__",
    "__getstate__",
    "__class__",
    "__array_namespace__",
    "__dlpack_device__",
}


@contextlib.contextmanager
def count_array_calls():
    """Yield a Counter of array calls by name, filled while the block runs."""
    import array_api_strict as strict

    counts: Counter = Counter()
    depth = [0]

    def counted(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if depth[0] == 0:
                counts[name] += 1
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1

        return wrapper

    array_type = type(strict.asarray(0.0))
    saved = []
    for name in dir(strict):
        fn = getattr(strict, name)
        if callable(fn) and not isinstance(fn, type) and name not in _NOT_COMPUTE:
            if not name.startswith("_"):
                saved.append((strict, name, fn))
    for name, fn in vars(array_type).items():
        if callable(fn) and name.startswith("__") and name not in _OBJECT_MACHINERY:
            saved.append((array_type, name, fn))
    saved.append((array_type, "to_device", array_type.to_device))
    try:
        for owner, name, fn in saved:
            setattr(owner, name, counted(name, fn))
        yield counts
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
