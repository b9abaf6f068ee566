use strict;
use warnings FATAL => 'all';

# The queue's ready hint (queue/ready_hint.c) under a random load: nothing
# that is ready, or becomes ready, may stay behind it.
#
# Six pgbench clients run a random mix for 15 seconds against four queues:
# jobs (3 deliveries, then the dead-letter queue dlq), dlq, hot (kept near
# empty: puts and gets that ack at once, so that gets often reach the end
# of the index while puts go in), and wq, which a worker handles with a
# handler that fails one call in three (retries, dead letters to dlq).
# Producers log every msg_id they put in "produced", in the put's own
# transaction (single puts, put_batch, delayed puts, a slow producer whose
# transaction stays open, puts rolled back), at priorities 0, 3, 6 and 9
# in jobs and wq: each lane has a hint of its own (queue/priorities.c).  Consumers record every
# message they handle in "handled" (msg_id the primary key, a second
# handling counted in dups), in the transaction of its ack:
#  - get, work and ack in one transaction (READ COMMITTED, REPEATABLE READ,
#    SERIALIZABLE, with a wait, prepared and then committed or rolled back
#    with one more lease of a minute);
#  - a get with a lease of 0-2 s or of a minute whose receipt goes to
#    "pending", and later transactions of any client that ack, nack (with
#    and without a delay) or extend (to 0, 0.3 or 3 s) pending leases by
#    receipt, some of them staying open a while after the nack or extend;
#  - two gets rolled back, gets rolled back to a savepoint, nacks in the
#    get's own transaction;
#  - acks without a receipt of messages others hold or are dead-lettering,
#    then gets of dlq and jobs, all rolled back.
# Beside them, a REPEATABLE READ transaction with an xid holds the horizon
# for part of the run, another one from second 11 on, and VACUUM runs
# every second.
#
# Then: once every short lease, delay and retry is over, a consumer leases
# the older half of jobs for a minute and one get per queue must take every
# message ready in it (compared by msg_id: a message behind the hint would
# be left out); the leases of a minute are ended by receipt (nack, extend
# to zero or to half a second) in a transaction that a get walks past
# before it commits, and the next get must take them all.  The queues end
# empty, every message put was handled exactly once, and, with the horizon
# held again and 1000 messages put and acked, the second get reads a
# handful of index entries: the hint still moves.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

use constant LOAD_SECONDS => 15;

my $node = new_node('hint_stress', workers => 1, extension => 1, conf => q{
max_prepared_transactions = 10
rmsg.worker_naptime = '200ms'
rmsg.retry_delay = '100ms'
rmsg.max_retry_delay = '400ms'
autovacuum = off
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
SELECT rmsg.create_queue('dlq', max_deliveries => 1000);
SELECT rmsg.create_queue('jobs', max_deliveries => 3, dead_letter_queue => 'dlq');
SELECT rmsg.create_queue('wq', max_deliveries => 3, dead_letter_queue => 'dlq');
SELECT rmsg.create_queue('hot');
CREATE TABLE produced (msg_id bigint PRIMARY KEY, q text NOT NULL);
CREATE TABLE handled (msg_id bigint PRIMARY KEY, how text NOT NULL, dups int NOT NULL DEFAULT 0);
CREATE TABLE pending (msg_id bigint PRIMARY KEY, receipt bigint NOT NULL);

-- acks a message we hold by its receipt and records it, in the caller's
-- transaction; false when the lease was no longer ours
CREATE FUNCTION handle(id bigint, rc bigint, how text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT rmsg.ack(id, rc) THEN
        RETURN false;
    END IF;
    INSERT INTO handled (msg_id, how) VALUES (id, how)
        ON CONFLICT (msg_id) DO UPDATE SET dups = handled.dups + 1;
    RETURN true;
END $$;

-- the worker's handler: records, then fails one call in three
CREATE FUNCTION work(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO handled (msg_id, how) VALUES (id, 'worker')
        ON CONFLICT (msg_id) DO UPDATE SET dups = handled.dups + 1;
    IF random() < 0.33 THEN
        RAISE EXCEPTION 'flaky handler';
    END IF;
END $$;
SELECT rmsg.subscribe('wq', 'work(bytea,jsonb,bigint)', 5);
});

my $dir = PostgreSQL::Test::Utils::tempdir();

# Producers.
my $produce = <<'EOF';
\set kind random(1, 100)
\set n random(1, 20)
\set prio random(0, 3) * 3
\if :kind <= 35
INSERT INTO produced SELECT rmsg.put('jobs', 'single ' || :client_id, priority => :prio), 'jobs';
\elif :kind <= 55
INSERT INTO produced SELECT id, 'jobs' FROM rmsg.put_batch('jobs', (SELECT array_agg(convert_to('batch ' || i, 'UTF8')) FROM generate_series(1, :n) i), priority => :prio) id;
\elif :kind <= 65
INSERT INTO produced SELECT rmsg.put('jobs', 'delayed', delay => random() * interval '1.5 seconds', priority => :prio), 'jobs';
\elif :kind <= 75
BEGIN;
INSERT INTO produced SELECT rmsg.put('jobs', 'slow', priority => :prio), 'jobs';
SELECT pg_sleep(random() * 0.3);
COMMIT;
\elif :kind <= 80
BEGIN;
SELECT rmsg.put('jobs', 'rolled back');
SELECT count(*) FROM rmsg.put_batch('jobs', ARRAY['rolled back 1', 'rolled back 2']::bytea[]);
ROLLBACK;
\else
INSERT INTO produced SELECT id, 'wq' FROM rmsg.put_batch('wq', (SELECT array_agg(convert_to('work ' || i, 'UTF8')) FROM generate_series(1, :n) i), priority => :prio) id;
\endif
EOF

# Consumers.
my $consume = <<'EOF';
\set kind random(1, 100)
\set nmax random(1, 8)
\if :kind <= 20
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'one')) FROM rmsg.get('jobs', :nmax, '2 seconds');
\elif :kind <= 36
INSERT INTO pending SELECT msg_id, receipt FROM rmsg.get('jobs', :nmax, CASE WHEN random() < 0.5 THEN interval '1 minute' ELSE random() * interval '2 seconds' END)
    ON CONFLICT (msg_id) DO UPDATE SET receipt = excluded.receipt;
\elif :kind <= 42
WITH p AS (DELETE FROM pending WHERE msg_id IN (SELECT msg_id FROM pending ORDER BY random() LIMIT :nmax FOR UPDATE SKIP LOCKED) RETURNING *)
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'later')) FROM p;
\elif :kind <= 46
WITH p AS (DELETE FROM pending WHERE msg_id IN (SELECT msg_id FROM pending ORDER BY random() LIMIT 2 FOR UPDATE SKIP LOCKED) RETURNING *)
SELECT count(*) FILTER (WHERE rmsg.nack(msg_id, CASE WHEN random() < 0.5 THEN NULL ELSE random() * interval '1 second' END, receipt)) FROM p;
\elif :kind <= 50
WITH p AS (DELETE FROM pending WHERE msg_id IN (SELECT msg_id FROM pending ORDER BY random() LIMIT 2 FOR UPDATE SKIP LOCKED) RETURNING *),
     e AS (SELECT msg_id, receipt, (ARRAY[0, 0.3, 3])[1 + floor(random() * 3)::int] * interval '1 second' AS v FROM p)
INSERT INTO pending SELECT msg_id, receipt FROM e WHERE rmsg.extend(msg_id, v, receipt)
    ON CONFLICT (msg_id) DO UPDATE SET receipt = excluded.receipt;
\elif :kind <= 53
BEGIN;
WITH p AS (DELETE FROM pending WHERE msg_id IN (SELECT msg_id FROM pending ORDER BY random() LIMIT 2 FOR UPDATE SKIP LOCKED) RETURNING *)
SELECT count(*) FILTER (WHERE CASE WHEN random() < 0.5 THEN rmsg.nack(msg_id, NULL, receipt) ELSE rmsg.extend(msg_id, '0 seconds', receipt) END) FROM p;
SELECT pg_sleep(random() * 0.2);
COMMIT;
\elif :kind <= 60
BEGIN;
SELECT count(*) FROM rmsg.get('jobs', :nmax, '1 minute');
SELECT pg_sleep(random() * 0.05);
SELECT count(*) FROM rmsg.get('jobs', :nmax, '1 minute');
ROLLBACK;
\elif :kind <= 65
BEGIN;
SAVEPOINT s;
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'undone')) FROM rmsg.get('jobs', :nmax, '1 minute');
ROLLBACK TO SAVEPOINT s;
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'savepoint')) FROM rmsg.get('jobs', 1, '2 seconds');
COMMIT;
\elif :kind <= 70
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM pending;
SELECT pg_sleep(random() * 0.05);
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'repeatable read')) FROM rmsg.get('jobs', :nmax, '2 seconds');
COMMIT;
\elif :kind <= 74
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'serializable')) FROM rmsg.get('jobs', :nmax, '2 seconds');
COMMIT;
\elif :kind <= 80
BEGIN;
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'prepared')) FROM rmsg.get('jobs', :nmax, '2 seconds');
INSERT INTO pending SELECT msg_id, receipt FROM rmsg.get('jobs', 2, '1 minute')
    ON CONFLICT (msg_id) DO UPDATE SET receipt = excluded.receipt;
PREPARE TRANSACTION 'h_:client_id';
\if :kind % 2 = 0
COMMIT PREPARED 'h_:client_id';
\else
ROLLBACK PREPARED 'h_:client_id';
\endif
\elif :kind <= 85
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'waited')) FROM rmsg.get('jobs', :nmax, '2 seconds', wait => '0.2 seconds');
\elif :kind <= 89
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'nacked')) FROM (SELECT * FROM rmsg.get('jobs', 2, '1 minute')) g
 WHERE NOT rmsg.nack(msg_id, CASE WHEN random() < 0.5 THEN NULL ELSE interval '0.2 seconds' END, receipt);
\elif :kind <= 95
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'dead letter')) FROM rmsg.get('dlq', :nmax, '2 seconds');
\else
BEGIN;
SELECT count(rmsg.ack(msg_id)) FROM ((SELECT msg_id FROM rmsg.lease WHERE deliveries >= 3 AND lease_until < now() + interval '0.5 seconds' LIMIT 2)
                                     UNION ALL (SELECT msg_id FROM produced ORDER BY msg_id DESC LIMIT 2 OFFSET :nmax)) x;
SELECT count(*) FROM rmsg.get('dlq', 3, '1 minute');
SELECT count(*) FROM rmsg.get('jobs', 3, '1 minute');
ROLLBACK;
\endif
EOF

# A queue kept near empty: single puts, and gets that ack at once.
my $hot = <<'EOF';
\set kind random(1, 100)
\set n random(1, 10)
\if :kind <= 25
INSERT INTO produced SELECT rmsg.put('hot', 'hot ' || :client_id), 'hot';
\elif :kind <= 45
INSERT INTO produced SELECT id, 'hot' FROM rmsg.put_batch('hot', (SELECT array_agg(convert_to('hot ' || i, 'UTF8')) FROM generate_series(1, :n) i)) id;
\else
SELECT count(*) FILTER (WHERE handle(msg_id, receipt, 'hot')) FROM rmsg.get('hot', 10, '2 seconds');
\endif
EOF

for ([ 'produce.sql', $produce ], [ 'consume.sql', $consume ], [ 'hot.sql', $hot ])
{
	open(my $fh, '>', "$dir/$_->[0]") or die "$dir/$_->[0]: $!";
	print $fh $_->[1];
	close $fh;
}

#---------------------------------------------------------------------------
# The load.
#---------------------------------------------------------------------------
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '6', '-j', '2', '-T', LOAD_SECONDS,
		'--max-tries=100', '-h', $node->host, '-p', $node->port,
		'-f', "$dir/produce.sql\@25", '-f', "$dir/consume.sql\@55", '-f', "$dir/hot.sql\@20", 'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);

my $holder = session_open($node, 'holder');
my $late_holder = session_open($node, 'late_holder');
my $start = time;
my ($held, $released, $late) = (0, 0, 0);
while (time - $start < LOAD_SECONDS)
{
	my $t = time - $start;
	if (!$held && $t >= 2)
	{
		session_query($holder, q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current() > 0;},
			'a transaction holds the horizon');
		$held = 1;
	}
	if ($held && !$released && $t >= 9)
	{
		session_query($holder, 'COMMIT;', 'the horizon is released');
		$released = 1;
	}
	if (!$late && $t >= 11)
	{
		session_query($late_holder, q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current() > 0;},
			'another transaction holds the horizon, to the end');
		$late = 1;
	}
	sql('VACUUM rmsg.message, rmsg.lease');
	usleep(1_000_000);
}
# A VACUUM slowed by the load may have carried the loop past the second a
# holder was due: each still holds and ends as planned.
if (!$held)
{
	session_query($holder, q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current() > 0;},
		'a transaction holds the horizon');
	$held = 1;
}
if (!$released)
{
	session_query($holder, 'COMMIT;', 'the horizon is released');
	$released = 1;
}
if (!$late)
{
	session_query($late_holder, q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current() > 0;},
		'another transaction holds the horizon, to the end');
	$late = 1;
}
$bench->finish;
note("pgbench: " . join(' | ', grep { /processed|failed|retried|aborted|tps/ } split /\n/, $bench_out));
unlike($bench_err, qr/aborted|ERROR|FATAL|PANIC/, 'no client of the load met an error');
like($bench_out, qr/number of transactions actually processed: [1-9]/, 'the load ran');
note("produced: " . sql(q{SELECT string_agg(q || ' ' || n, ', ') FROM (SELECT q, count(*) n FROM produced GROUP BY q) s}));
note("handled during the load: " . sql(q{SELECT string_agg(how || ' ' || n, ', ' ORDER BY how) FROM (SELECT how, count(*) n FROM handled GROUP BY how) s}));

is(sql(q{SELECT count(*) FROM pg_prepared_xacts}), '0', 'no prepared transaction is left over');

#---------------------------------------------------------------------------
# Every lease, delay and retry over: nothing may stay behind the hint.
#---------------------------------------------------------------------------
# What a get must take now: every message of the queue ready in it, but
# those whose deliveries are used up (a get moves them to dlq).
sub ready_ids
{
	my ($q) = @_;
	return sql(qq{
SELECT coalesce(string_agg(msg_id::text, ',' ORDER BY msg_id), '')
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) LEFT JOIN rmsg.lease l USING (msg_id)
 WHERE q.name = '$q' AND visible_at <= now() AND (l.lease_until IS NULL OR l.lease_until <= now())
   AND coalesce(l.deliveries, 0) < q.max_deliveries});
}

# One get of the queue, whose messages are handled: the msg_ids it took.
sub drain
{
	my ($q, $how) = @_;
	return sql(qq{
WITH g AS (SELECT * FROM rmsg.get('$q', 10000, '1 hour'))
SELECT coalesce(string_agg(msg_id::text, ',' ORDER BY msg_id) FILTER (WHERE handle(msg_id, receipt, '$how')), '') FROM g});
}

sub count_ids { my $n = () = $_[0] =~ /\d+/g; return $n; }

# Wait for every short lease, delay and retry to end; the leases of a
# minute in "pending" still run.
note('at the end of the load: ' . sql(q{SELECT string_agg(queue || ' ' || ready || ' ready, ' || in_flight || ' in flight, ' || delayed || ' delayed', '; ' ORDER BY queue) FROM rmsg.queues}));
my $busy = q{SELECT count(*) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) LEFT JOIN rmsg.lease l USING (msg_id)
 WHERE (l.lease_until > now() AND l.lease_until < now() + interval '10 seconds') OR visible_at > now() OR q.name = 'wq'};
my $waited = time;
while (sql($busy) ne '0' && time - $waited < 30)
{
	usleep(200_000);
}
is(sql($busy), '0', 'every short lease and delay ends, and the worker empties its queue');
note(sprintf('settled %.1f s after the load', time - $waited));
sql(q{SELECT rmsg.unsubscribe('wq')});

# The horizon is released, and VACUUM makes room: the leases ended below
# are then HOT updates, whose newest version a dirty look does not reach
# while the old one's updater runs.
session_query($late_holder, 'COMMIT;', 'the horizon holder ends');
sql('VACUUM rmsg.message');

# A consumer leases the older half of the ready messages of jobs for a
# minute (pending, as in the load).  Then one get per queue takes every
# message ready there: found by the first get, wherever the hint was.
note('leased for a minute after the load: ' . sql(q{
WITH r AS (SELECT count(*) AS n FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
            LEFT JOIN rmsg.lease l USING (msg_id)
            WHERE q.name = 'jobs' AND (l.lease_until IS NULL OR l.lease_until <= now())),
     g AS (INSERT INTO pending SELECT msg_id, receipt FROM rmsg.get('jobs', (SELECT greatest(n / 2, 1)::int FROM r), '1 minute')
           ON CONFLICT (msg_id) DO UPDATE SET receipt = excluded.receipt RETURNING 1)
SELECT count(*) FROM g}));
for my $q ('hot', 'jobs', 'dlq')
{
	my $expected = ready_ids($q);
	my $took = drain($q, 'drain');
	note("$q: the first get after the load took " . count_ids($took) . ' of ' . count_ids($expected));
	is($took, $expected, "$q: the first get after the load takes every ready message");
}

# The long leases, which the gets just passed, end now: nacked, extended
# to zero, or shortened to half a second, in a transaction that a get
# walks past before it commits; then the next get takes them all.
my $long = sql(q{SELECT count(*) FROM rmsg.lease WHERE lease_until > now() + interval '10 seconds'});
my $ender = session_open($node, 'ender');
my $ended = session_query($ender, q{BEGIN;
SELECT count(*) FILTER (WHERE CASE msg_id % 3 WHEN 0 THEN rmsg.nack(msg_id, NULL, receipt)
                                              WHEN 1 THEN rmsg.extend(msg_id, '0 seconds', receipt)
                                              ELSE rmsg.extend(msg_id, '0.5 seconds', receipt) END)
  FROM pending;}, 'the long leases are ended');
note("$long leases of a minute after the load, $ended of them ended by receipt");
is($ended, $long, 'every long lease was pending, and is ended');
is(drain('jobs', 'drain'), '', 'a get while the leases are being ended takes nothing');
session_query($ender, 'COMMIT;', 'the ends of the leases commit');
usleep(600_000);
{
	my $expected = ready_ids('jobs');
	my $took = drain('jobs', 'drain, lease ended');
	is($took, $expected, 'jobs: the next get takes every message whose lease was ended');
	note('the get after the long leases ended took ' . count_ids($took));
}
{
	my $expected = ready_ids('dlq');
	is(drain('dlq', 'drain'), $expected, 'dlq: the next get takes every message moved there since');
}
is(drain('jobs', 'drain') . '|' . drain('dlq', 'drain'), '|', 'nothing more to take');
is(sql(q{SELECT string_agg(queue || ':' || ready || '|' || in_flight || '|' || delayed || '|' || dead, ' ' ORDER BY queue) FROM rmsg.queues}),
	'dlq:0|0|0|0 hot:0|0|0|0 jobs:0|0|0|0 wq:0|0|0|0', 'the queues are empty, nothing is dead');

is(sql(q{SELECT count(*) FROM produced p FULL JOIN handled h USING (msg_id) WHERE p.msg_id IS NULL OR h.msg_id IS NULL}),
	'0', 'every message put was handled, and only those');
is(sql(q{SELECT coalesce(sum(dups), 0) FROM handled}), '0', 'none was handled twice');
note('handled: ' . sql(q{SELECT string_agg(how || ' ' || n, ', ' ORDER BY how) FROM (SELECT how, count(*) n FROM handled GROUP BY how) s}));

# The hint still moves: with the horizon held again and 1000 messages put
# and acked, the first get walks their entries, the next one starts past
# them.
sub get_cost
{
	my $out = sql(q{
SET stats_fetch_consistency = none;
SELECT rmsg.put('jobs', 'probe') > 0;
SELECT pg_stat_force_next_flush();
SELECT 'before', idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
SELECT 'took', count(*) FILTER (WHERE handle(msg_id, receipt, 'probe')) FROM rmsg.get('jobs', 1, '1 hour');
SELECT pg_stat_force_next_flush();
SELECT 'after', idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
});
	my %v = $out =~ /^(before|took|after)\|(\d+)$/mg;
	return ($v{after} - $v{before}, $v{took});
}
session_query($late_holder, q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current() > 0;},
	'the horizon is held again');
sql(q{
DO $$
BEGIN
  FOR b IN 1..10 LOOP
    PERFORM rmsg.ack(array_agg(id))
       FROM rmsg.put_batch('jobs', (SELECT array_agg(convert_to('churn ' || i, 'UTF8')) FROM generate_series(1, 100) i)) id;
    COMMIT;
  END LOOP;
END $$;
});
my ($cost1, $took1) = get_cost();
my ($cost2, $took2) = get_cost();
note("index entries read by the gets after the drain: $cost1, then $cost2");
is("$took1|$took2", '1|1', 'the gets after the drain take their messages');
cmp_ok($cost1, '>=', 1000, 'the first get after the churn walks its entries');
cmp_ok($cost2, '<', 10, 'the hint still moves after the load');

session_query($late_holder, 'COMMIT;', 'the horizon holder ends');
session_kill($_) for ($holder, $late_holder, $ender);
$node->stop;
done_testing();
