"""What the hostile-input clients share: a list of passed checks, and failing with the last one named."""
import sys

passed = []


def fail(message):
    print(f"FAIL: {message} (after: {passed[-1] if passed else 'nothing'})")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)
