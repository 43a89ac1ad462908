# SPDX-License-Identifier: MIT
"""`make test` passes wherever the checkout lives. Root's home is mode 0700, as is any
directory `mktemp -d` makes: a checkout there is out of reach of the unprivileged user the
tests run agents as, so whatever that user runs or reads must come from elsewhere (the test
library copies it into a directory of its own, as `make demo` does).

This runs the cases that run agents as another user from a copy of the test tree and of the
built programs inside a fresh 0700 directory, and fails if any of them fails there. Nothing
is rebuilt: the build outputs are copied. Needs root (SKIP otherwise)."""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deputytest as dt  # noqa: E402
from deputytest import case, check, eq  # noqa: E402

BUILT = ["deputyd", "deputy", "libdeputy.so", "tests/backend", "tests/progs"]


class PrivateCheckout:
    """tests/lib, tests/integration and the build outputs, under a 0700 directory."""

    def __init__(self):
        self.top = dt.TempDir(prefix="deputy-private.").path
        os.chmod(self.top, 0o700)
        self.src = os.path.join(self.top, "deputy")
        self.build = os.path.join(self.src, "build")
        for sub in ("lib", "integration"):
            shutil.copytree(os.path.join(dt.SRC, "tests", sub),
                            os.path.join(self.src, "tests", sub),
                            ignore=shutil.ignore_patterns("__pycache__"))
        for name in BUILT:
            src, dst = os.path.join(dt.BUILD, name), os.path.join(self.build, name)
            if not os.path.exists(src):
                dt.skip("%s is not built (make tests-build)" % src)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.d"))
            else:
                shutil.copy2(src, dst)
        # the point of the exercise: from here the unprivileged user reaches nothing
        r = dt.run(["sh", "-c", 'test -x "$1"', "sh", os.path.join(self.build, "deputy")],
                   user=dt.unprivileged_user())
        check(r.returncode != 0, "the private checkout is reachable by uid %d"
              % dt.unprivileged_user()[0])

    def run_cases(self, test, names):
        """Runs the named cases of tests/integration/TEST from the private checkout;
        returns {case name: its PASS/FAIL/SKIP line}."""
        env = dict(os.environ, DEPUTY_SRC=self.src, BUILD=self.build)
        env.pop("DEPUTY_TEST_AGENT_DIR", None)  # its own copy, made from the private tree
        r = dt.run([dt.PYTHON, os.path.join(self.src, "tests", "integration", test)] + names,
                   env=env, timeout=500, cwd=self.src)
        lines = {}
        for line in r.stdout.splitlines():
            for kind in ("PASS", "FAIL", "SKIP"):
                if line.startswith(kind + ": "):
                    lines[line.split(": ", 2)[1]] = line
        return lines, r


def run_from_private_checkout(test, names):
    if not dt.is_root():
        dt.skip("needs root to run agents as another user")
    lines, r = PrivateCheckout().run_cases(test, names)
    failed = [lines.get(n, "%s: no result" % n) for n in names
              if not lines.get(n, "").startswith(("PASS", "SKIP"))]
    check(not failed, "from a 0700 checkout: %s (%s)" % ("; ".join(failed),
                                                          r.stdout[-1500:].replace("\n", " | ")))
    skipped = [lines[n] for n in names if lines[n].startswith("SKIP")]
    if skipped:
        dt.skip("; ".join(skipped), bpf=True)
    eq(r.returncode, 0, "exit status of " + test)


@case
def unprivileged_sessions_from_a_private_checkout():
    run_from_private_checkout("test_sessions.py", ["unprivileged_user_runs_a_session",
                                                   "peer_check_outside_and_other_sessions"])


@case
def unprivileged_kernel_cases_from_a_private_checkout():
    run_from_private_checkout("test_kernel_sessions.py",
                              ["clients_of_an_unprivileged_user",
                               "processes_outside_sessions_are_never_affected"])


if __name__ == "__main__":
    dt.main()
