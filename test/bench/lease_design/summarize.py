#!/usr/bin/env python3
"""The tables test/bench/lease_design.sh prints at its end.

Reads the figures the run recorded, one per line:
    test <TAB> design <TAB> round <TAB> metric <TAB> value
and prints, per test, the median of each figure's samples for each design,
every sample in brackets (in the order of the rounds), and B/A, B2/A of the
medians; then the paired ratios of the rates, put_batch against plain
INSERTs, the plans' buffers, and the double deliveries of B without its
guard.  Usage: summarize.py RAW.TSV
"""
import collections
import statistics
import sys

DESIGNS = [('a', 'A in the row'), ('b', 'B lease table'), ('b2', 'B2 B+recheck')]

# The tables of the per-design figures, in the order they ran.
TESTS = [
    ('cycle', 'put, get 1, ack: 4 clients, synchronous_commit = on'),
    ('cycle_async', 'the same, synchronous_commit = off'),
    ('drain', 'get 10 + ack on a backlog, 2 clients, until empty'),
    ('getonly_2cl', 'get 10, never acked, on a backlog: 2 clients'),
    ('getonly_1cl', 'the same, 1 client'),
]

# The rates first, then what explains them; a figure not listed here comes
# after these, in alphabetical order.
METRIC_ORDER = [
    'tps', 'acked_per_s', 'msgs_per_s', 'cycles', 'left_in_queue', 'leased',
    'double_deliveries', 'short_get_pct', 'get_calls_per_10msgs', 'pgbench_rounds',
    'secs_walking_leased', 'wal_per_msg', 'walrec_nofpi_per_msg', 'walfpi_bytes_per_msg',
    'fg_nofpi_per_msg', 'fg_wal_per_msg', 'heap_lock_recs_per_msg', 'fpi_per_msg',
    'sync_per_msg', 'hot_pct',
]

# The rates whose paired ratios are printed: each round's B (B2) over the
# same round's A, which ran right beside it.
PAIRED = [('cycle', 'tps'), ('cycle', 'acked_per_s'), ('cycle_async', 'tps'),
          ('cycle_async', 'acked_per_s'), ('drain', 'msgs_per_s')]

PUT_TABLES = ['a.message', 'p.plain_a', 'b.message', 'p.plain_b']


def load(path):
    """Numbers and texts by (test, design, metric), each a list of
    (round, value) in the order they were recorded."""
    numbers = collections.defaultdict(list)
    texts = collections.defaultdict(list)
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            test, design, rnd, metric, value = line.rstrip('\n').split('\t')
            try:
                numbers[(test, design, metric)].append((rnd, float(value)))
            except ValueError:
                texts[(test, design, metric)].append((rnd, value))
    return numbers, texts


def fmt(x):
    """Large figures to the unit with thousands separators, small ones to
    three significant digits: the noise is larger than what is cut."""
    if x is None:
        return '-'
    return f'{x:,.0f}' if abs(x) >= 100 else f'{x:.3g}'


def ratio(x, a):
    return f'{x / a:.2f}' if x is not None and a else '-'


def print_table(header, rows):
    """Columns as wide as their widest cell: the first to the left, the
    others to the right."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        print('  ' + '  '.join(cells).rstrip())


def main():
    numbers, texts = load(sys.argv[1])

    def values(test, design, metric):
        return [v for _, v in numbers.get((test, design, metric), [])]

    def median(test, design, metric):
        v = values(test, design, metric)
        return statistics.median(v) if v else None

    print('Medians of the samples, each sample in brackets; B/A and B2/A of the medians.')
    for n, (test, title) in enumerate(TESTS, 1):
        metrics = {m for (t, _, m) in numbers if t == test}
        if not metrics:
            continue
        ordered = [m for m in METRIC_ORDER if m in metrics] + sorted(metrics - set(METRIC_ORDER))
        print(f'\n{n}. {test}: {title}')
        rows = []
        for m in ordered:
            a = median(test, 'a', m)
            row = [m]
            for d, _ in DESIGNS:
                v = values(test, d, m)
                row.append(fmt(median(test, d, m)) + (' [' + '/'.join(fmt(x) for x in v) + ']' if v else ''))
            row += [ratio(median(test, 'b', m), a), ratio(median(test, 'b2', m), a)]
            rows.append(row)
        print_table(['figure'] + [name for _, name in DESIGNS] + ['B/A', 'B2/A'], rows)

    print('\nPaired ratios: each round\'s B (B2) over the same round\'s A; their median, each round\'s in brackets.')
    rows = []
    for test, m in PAIRED:
        a = dict(numbers.get((test, 'a', m), []))
        row = [f'{test} {m}']
        for d in ('b', 'b2'):
            x = dict(numbers.get((test, d, m), []))
            rs = [x[r] / a[r] for r in a if r in x and a[r]]
            row.append(f'{statistics.median(rs):.2f} [' + '/'.join(f'{v:.2f}' for v in rs) + ']' if rs else '-')
        rows.append(row)
    print_table(['rate', 'B/A', 'B2/A'], rows)

    print('\n6. put_batch: 100 rows per INSERT, 4 clients (B2 writes as B does)')
    rows = []
    for t in PUT_TABLES:
        v = values('put_batch', t, 'rows_per_s')
        rows.append([t, fmt(median('put_batch', t, 'rows_per_s')) + ' [' + '/'.join(fmt(x) for x in v) + ']',
                     fmt(median('put_batch', t, 'wal_per_msg')),
                     fmt(median('put_batch', t, 'walrec_nofpi_per_msg'))])
    print_table(['table', 'rows/s', 'WAL B/row', 'no-FPI B/row'], rows)

    def put_ratio(x, y):
        """Each round's rows/s of x over y's (they ran in the same round)."""
        xs = dict(numbers.get(('put_batch', x, 'rows_per_s'), []))
        ys = dict(numbers.get(('put_batch', y, 'rows_per_s'), []))
        rs = [xs[r] / ys[r] for r in xs if r in ys and ys[r]]
        return f'{statistics.median(rs):.2f} [' + '/'.join(f'{v:.2f}' for v in rs) + ']' if rs else '-'
    print_table(['rows/s ratio, the median of the rounds\'', ''],
                [['A / plain table of A\'s columns', put_ratio('a.message', 'p.plain_a')],
                 ['B / plain table of B\'s columns', put_ratio('b.message', 'p.plain_b')],
                 ['B / plain table of A\'s columns', put_ratio('b.message', 'p.plain_a')],
                 ['B / A', put_ratio('b.message', 'a.message')]])

    print('\n7. explain: a get of 10 with 10,000 leased messages ahead; shared buffers of the top node')
    print('   (hit + read), and ms; runs 1 and 2, then 3 after a VACUUM')
    rows = []
    for d, name in DESIGNS:
        buf = dict(numbers.get(('explain', d, 'buffers'), []))
        ms = dict(numbers.get(('explain', d, 'exec_ms'), []))
        row = [name]
        for r in ('1', '2', '3'):
            row.append(f'{fmt(buf.get(r))} / {ms[r]:.1f} ms' if r in ms else fmt(buf.get(r)))
        a1 = dict(numbers.get(('explain', 'a', 'buffers'), [])).get('1')
        row.append(ratio(buf.get('1'), a1) if d != 'a' else '')
        rows.append(row)
    print_table(['design', 'run 1', 'run 2', 'run 3 (vacuumed)', 'run 1 / A'], rows)
    for d, name in DESIGNS:
        for r, line in texts.get(('explain', d, 'buffers_line'), []):
            print(f'  {d} run {r}: {line}')

    print('\n8. race: B without its guard, 2 clients getting 10 at a time over the backlog')
    race = ['deliveries', 'messages_leased', 'double_deliveries', 'messages_leased_twice_or_more']
    print_table(['figure', 'B without guard'],
                [[m, fmt(numbers[('race', 'b', m)][0][1])] for m in race if ('race', 'b', m) in numbers])


if __name__ == '__main__':
    main()
