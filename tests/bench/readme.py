# SPDX-License-Identifier: MIT
"""Writes the tables of `make bench` into README.md from build/bench.json, so the README's Cost
section shows one run's numbers exactly as the run printed them:

    make bench && /usr/bin/python3 tests/bench/readme.py [build/bench.json [README.md]]

Each table in the README sits between two markers naming the sections it shows:

    <!-- bench-table: request,mint,breakdown,connect,memory -->
    ```
    ...
    ```
    <!-- /bench-table -->

A block whose sections the run did not measure (BENCH_ONLY) is left as it is, and said so.
The prose around the tables (what limits a missed target) is not generated: read the run's
"How each row was measured" and its raw numbers in bench.json, then update it by hand."""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from table import env_line, table_lines  # noqa: E402

BLOCK = re.compile(r'(<!-- bench-table: ([a-z,]+) -->\n)(.*?)(<!-- /bench-table -->)', re.S)


def main():
    src = os.path.join(HERE, '..', '..')
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get('BUILD', os.path.join(src, 'build')), 'bench.json')
    readme = sys.argv[2] if len(sys.argv) > 2 else os.path.join(src, 'README.md')
    with open(path) as f:
        run = json.load(f)
    with open(readme) as f:
        text = f.read()
    done = []

    def fill(m):
        sections = m.group(2).split(',')
        have = {r['section'] for r in run['rows']}
        if not have & set(sections):
            print('readme: %s: not in this run, left as it was' % m.group(2), file=sys.stderr)
            return m.group(0)
        done.append(m.group(2))
        body = '\n'.join([env_line(run['env']), ''] + table_lines(run['rows'], sections))
        return m.group(1) + '```\n' + body + '\n```\n' + m.group(4)

    out = BLOCK.sub(fill, text)
    if not done:
        sys.exit('readme: no bench-table block of %s was filled' % readme)
    with open(readme, 'w') as f:
        f.write(out)
    print('readme: %s: wrote %s' % (readme, '; '.join(done)), file=sys.stderr)


if __name__ == '__main__':
    main()
