# SPDX-License-Identifier: MIT
"""The bench table as text: printed by bench.py at the end of `make bench`, and written into
the README's Cost section from build/bench.json by readme.py, so both read the same."""

COLS = [('what', 44), ('without', 14), ('with', 14), ('result', 50), ('target', 22)]


def met_text(r):
    if r.get('met') is None:
        # not measurable in this run (not built, or rate not reached)
        return '-' if r.get('target') else ''
    if 'met_p50' in r and r['met_p50'] != r['met_p99']:
        return 'p50 %s, p99 %s' % ('yes' if r['met_p50'] else 'NO',
                                   'yes' if r['met_p99'] else 'NO')
    return 'yes' if r['met'] else 'NO'


def table_lines(rows, sections=None):
    """The table's lines; only the sections named (all when None)."""
    head = '  '.join('%-*s' % (w, n) for n, w in COLS) + '  met'
    out = [head.rstrip()]
    section = None
    for r in rows:
        if sections is not None and r['section'] not in sections:
            continue
        if r['section'] != section:
            section = r['section']
            out.append('[%s]' % section)
        cells = ['%-*s' % (w, r.get(n) or '') for n, w in COLS]
        out.append(('  '.join(cells) + '  ' + met_text(r)).rstrip())
    return out


def env_line(env):
    return 'deputy cost, %s, %s CPUs, kernel %s, kernel layer %s, shim %s, load %.1f -> %.1f, %s s' % (
        env.get('date', '?'), env.get('cpus', '?'), env.get('kernel', '?'),
        env.get('kernel_layer', '?'), 'built' if env.get('shim') else 'not built',
        env.get('load_before', 0.0), env.get('load_after', 0.0), env.get('seconds', '?'))
