# SPDX-License-Identifier: MIT
"""The Python tests' checks hold under `python3 -O`, which drops every `assert` statement: a
test checking with `assert` would pass there without checking anything. So no Python file of
tests/ may use one (the test library's check/eq/fail raise instead), and the library's checks
and case runner must still fail a case under -O."""
import ast
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

# A test file with one failing check of each kind and one passing case, run under -O.
FAILING = r'''
import sys
sys.path.insert(0, %r)
import deputytest as dt

@dt.case
def by_check():
    dt.check(1 == 2, "check held")

@dt.case
def by_eq():
    dt.eq(1, 2, "eq held")

@dt.case
def by_check_eq():
    dt.check_eq(1, 2, "check_eq held")

@dt.case
def by_fail():
    dt.fail("fail held")

@dt.case
def passes():
    dt.eq(1, 1)

dt.main()
''' % dt.LIB


@case
def no_assert_statements_in_python_tests():
    found, files = [], 0
    for top, dirs, names in os.walk(os.path.join(dt.SRC, "tests")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for n in names:
            if not n.endswith(".py"):
                continue
            path = os.path.join(top, n)
            files += 1
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
            found += ["%s:%d" % (os.path.relpath(path, dt.SRC), node.lineno)
                      for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    check(files >= 5, "found only %d Python files under tests/" % files)
    eq(found, [], "assert statements (dropped by python3 -O; use dt.check or dt.eq)")


@case
def checks_fail_cases_under_python_O():
    d = dt.TempDir(prefix="deputy-pyO.").path
    script = os.path.join(d, "test_failing.py")
    with open(script, "w") as f:
        f.write(FAILING)
    r = dt.run([dt.PYTHON, "-O", script])
    lines = sorted(l for l in r.stdout.splitlines() if l.startswith(("PASS", "FAIL", "SKIP")))
    eq(lines, ["FAIL: by_check: check held", "FAIL: by_check_eq: check_eq held: got 1, want 2",
               "FAIL: by_eq: eq held: 1 != 2", "FAIL: by_fail: fail held", "PASS: passes"],
       "results under -O")
    eq(r.returncode, 1, "exit status with failed cases")


if __name__ == "__main__":
    dt.main()
