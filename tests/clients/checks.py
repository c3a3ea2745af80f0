"""A tiny runner shared by the client-compatibility checks.

Each check is a function registered with ``@check``; ``run()`` calls them in
order, prints one line per check (with the traceback of a failure) and a
closing ``N passed, N failed`` line, and exits 1 when any check failed.
Configuration comes from environment variables (see ``env``).
"""

import os
import sys
import traceback

_CHECKS = []


def check(fn):
    """Registers a check; checks run in the order they are defined."""
    _CHECKS.append(fn)
    return fn


def env(name):
    """A required environment variable; a missing one stops the run with a clear message."""
    value = os.environ.get(name)
    if not value:
        sys.exit(f"missing environment variable {name}")
    return value


def expect_raises(exc_class, fn, *args, **kwargs):
    """Calls fn and returns the exception it raised, which must be an exc_class (or a subclass)."""
    try:
        result = fn(*args, **kwargs)
    except exc_class as exc:
        return exc
    except Exception as exc:  # the wrong class is a failure that names both
        raise AssertionError(
            f"expected {exc_class.__name__}, got {type(exc).__name__}: {exc}"
        ) from exc
    raise AssertionError(f"expected {exc_class.__name__}, got a result: {result!r}")


def run(title):
    passed, failed = 0, 0
    for fn in _CHECKS:
        try:
            fn()
        except Exception:  # every failure is reported, the run goes on
            failed += 1
            print(f"FAIL {title}: {fn.__name__}")
            print(traceback.format_exc())
        else:
            passed += 1
            print(f"ok   {title}: {fn.__name__}")
    print(f"{title}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
