use strict;
use warnings FATAL => 'all';

# A long transaction must not make gets walk every message acked since it
# began.  While a transaction holds back the xmin horizon, VACUUM keeps the
# index entries of every acked message, and a get that walked the ready
# index from its front would read each of them from the heap.  Gets start
# at the queue's hint instead (queue/ready_hint.c), and move it over
# entries gone for good: the first get after a churn walks them once, the
# next ones do not.  Counted in index entries read (the statistics'
# idx_tup_read), which do not depend on the machine's speed.
#
# Then the hint must hold nothing back: with the horizon still held, a
# producer whose transaction stays open across consumers' gets and acks,
# leases that are rolled back or run out, and nacks, every message is
# taken once it is ready, and exactly the messages put are acked.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

use constant CHURN => 3000;

my $node = new_node('xmin', workers => 0, extension => 1, conf => q{
autovacuum = off
});
$node->safe_psql('postgres', q{SELECT rmsg.create_queue('jobs')});

# The transaction that holds the horizon: an xid, REPEATABLE READ.
my $holder = session_open($node, 'holder');
session_query($holder, q{BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT txid_current() > 0;}, 'the horizon holder starts');

# The index entries one get of queue jobs reads (idx_tup_read of the ready
# index, counted by the statistics), and how many messages it took.  The
# statistics of a session reach the shared counters when it goes idle after
# pg_stat_force_next_flush(); psql sends each statement on its own, so each
# line below ends idle.
sub get_cost
{
	my $out = $node->safe_psql('postgres', q{
SET stats_fetch_consistency = none;
SELECT pg_stat_force_next_flush();
SELECT 'before', idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
SELECT 'took', count(*) FROM rmsg.get('jobs', 1, '1 hour');
SELECT pg_stat_force_next_flush();
SELECT 'after', idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
});
	my %v = $out =~ /^(before|took|after)\|(\d+)$/mg;
	return ($v{after} - $v{before}, $v{took});
}

# Churn: CHURN messages put and acked by msg_id, in batches of 100, with no
# get in between, so the hint has not moved: the first get after it walks
# every entry they left.
$node->safe_psql('postgres', qq{
DO \$\$
BEGIN
  FOR b IN 1..${\ (CHURN / 100) } LOOP
    PERFORM rmsg.ack(array_agg(id))
       FROM rmsg.put_batch('jobs', (SELECT array_agg(convert_to('m' || i, 'UTF8'))
                                      FROM generate_series(1, 100) i)) id;
    COMMIT;
  END LOOP;
END \$\$;
});
my ($vacuum_out, $vacuum_err) = ('', '');
$node->psql('postgres', 'VACUUM (VERBOSE) rmsg.message',
	stdout => \$vacuum_out, stderr => \$vacuum_err);
my ($kept) = $vacuum_err =~ /(\d+) are dead but not yet removable/;
cmp_ok($kept // 0, '>=', CHURN,
	'the held horizon keeps the row versions of every acked message from VACUUM');

$node->safe_psql('postgres', q{SELECT rmsg.put('jobs', 'after the churn'::text)});
my ($first, $rows1) = get_cost();
$node->safe_psql('postgres', q{SELECT rmsg.put('jobs', 'and another'::text)});
my ($second, $rows2) = get_cost();
$node->safe_psql('postgres', q{SELECT rmsg.put('jobs', 'and a third'::text)});
my ($third, $rows3) = get_cost();
note("index entries the gets after the churn read: $first, then $second, then $third");
is("$rows1|$rows2|$rows3", '1|1|1', 'each get takes its message');
cmp_ok($first, '>', CHURN / 2, 'the first get walks the entries of the acked messages, once');
cmp_ok($second, '<', 10, 'the next get starts past them');
cmp_ok($third, '<', 10, 'and so does the one after');

#---------------------------------------------------------------------------
# A batch: its messages share one visible_at.  Consumers that take 10 at a
# time and ack them must not walk the acked part of the batch again on
# every get: the hint's key is (visible_at, msg_id), so it stops inside
# the batch.  With visible_at alone, the 50th get read 780 entries.
#---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
SELECT count(*) FROM rmsg.put_batch('jobs', (SELECT array_agg(convert_to('b' || i, 'UTF8'))
                                               FROM generate_series(1, 1000) i));
DO $$
BEGIN
  FOR g IN 1..49 LOOP
    PERFORM rmsg.ack(msg_id) FROM rmsg.get('jobs', 10, '1 hour');
    COMMIT;
  END LOOP;
END $$;
});
my $out = $node->safe_psql('postgres', q{
SET stats_fetch_consistency = none;
SELECT pg_stat_force_next_flush();
SELECT 'before', idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
SELECT 'took', count(rmsg.ack(msg_id)) FROM rmsg.get('jobs', 10, '1 hour');
SELECT pg_stat_force_next_flush();
SELECT 'after', idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
});
my %batch = $out =~ /^(before|took|after)\|(\d+)$/mg;
my $batch_walk = $batch{after} - $batch{before};
note("index entries the 50th get of 10 in a batch of 1000 read: $batch_walk");
is($batch{took}, 10, 'the 50th get in a batch takes 10');
cmp_ok($batch_walk, '<', 50, 'and starts past the acked messages of the batch');
$node->safe_psql('postgres', q{
SELECT count(rmsg.ack(msg_id)) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'jobs'});

#---------------------------------------------------------------------------
# Messages in flight ahead of the ready ones: leased by committed gets, they
# are passed too, and gets come back to them when their leases may end, or
# at once when a nack or an extend to zero ends one.
#---------------------------------------------------------------------------
use constant IN_FLIGHT => 2000;
$node->safe_psql('postgres', qq{
SELECT count(*) FROM rmsg.put_batch('jobs', (SELECT array_agg(convert_to('lease ' || i, 'UTF8'))
                                               FROM generate_series(1, ${\ IN_FLIGHT }) i));
SELECT count(*) FROM rmsg.get('jobs', ${\ IN_FLIGHT }, '1 hour');
});
$node->safe_psql('postgres', q{SELECT rmsg.put('jobs', 'behind the leases'::text)});
my ($walk1) = get_cost();
$node->safe_psql('postgres', q{SELECT rmsg.put('jobs', 'and another'::text)});
my ($walk2, $took2) = get_cost();
note("index entries read with " . IN_FLIGHT . " messages in flight ahead: $walk1, then $walk2");
cmp_ok($walk1, '>=', IN_FLIGHT, 'the first get walks the messages in flight');
is($took2, 1, 'the next get takes its message');
cmp_ok($walk2, '<', 10, 'and starts past the messages in flight');

# A nack of a message the hint passed: ready at once, at its old place.
my $first_leased = $node->safe_psql('postgres', q{
SELECT min(msg_id) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) JOIN rmsg.lease l USING (msg_id)
 WHERE q.name = 'jobs' AND l.lease_until > now()});
is($node->safe_psql('postgres', "SELECT rmsg.nack($first_leased)"), 't', 'a message in flight is nacked');
is($node->safe_psql('postgres', q{SELECT msg_id FROM rmsg.get('jobs', 1, '1 hour')}), $first_leased,
	'the next get takes it, although the hint had passed it');
# An extend to zero: the same.
is($node->safe_psql('postgres', "SELECT rmsg.extend($first_leased + 1, '0 seconds')"), 't',
	'a lease is extended to zero');
is($node->safe_psql('postgres', q{SELECT msg_id FROM rmsg.get('jobs', 1, '1 hour')}), $first_leased + 1,
	'the next get takes that message');

# Leases that run out: three messages leased for a second; once it is over
# the gets come back to them, before the messages put since.
my $short = $node->safe_psql('postgres', q{
SELECT string_agg(msg_id::text, ',' ORDER BY msg_id) FROM (
  SELECT msg_id FROM rmsg.put_batch('jobs', ARRAY['s1', 's2', 's3']::bytea[]) msg_id) p;
});
is($node->safe_psql('postgres', q{SELECT string_agg(msg_id::text, ',' ORDER BY msg_id) FROM rmsg.get('jobs', 3, '1 second')}),
	$short, 'three messages leased for a second');
$node->safe_psql('postgres', q{SELECT rmsg.put('jobs', 'after the short leases'::text)});
is($node->safe_psql('postgres', q{SELECT convert_from(payload, 'UTF8') FROM rmsg.get('jobs', 1, '1 hour')}),
	'after the short leases', 'while they run, gets pass them');
$node->safe_psql('postgres', q{SELECT pg_sleep(1.2)});
is($node->safe_psql('postgres', q{SELECT string_agg(msg_id::text, ',' ORDER BY msg_id) FROM rmsg.get('jobs', 10, '1 hour')}),
	$short, 'once their leases are over, the next get takes them again');
$node->safe_psql('postgres', q{
SELECT count(rmsg.ack(msg_id)) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'jobs'});

#---------------------------------------------------------------------------
# Nothing is held back: a slow producer, rolled-back and expired leases,
# nacks, with the horizon still held and the hint moving.
#---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
SELECT count(rmsg.ack(msg_id)) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'jobs';
CREATE TABLE handled (payload text PRIMARY KEY);
});
my $slow = session_open($node, 'slow');
session_query($slow, q{BEGIN; SELECT rmsg.put('jobs', 'slow one'::text) > 0;}, 'a slow put, uncommitted');
$node->safe_psql('postgres', q{SELECT rmsg.put('jobs', 'leased, rolled back'::text)});
my $leaser = session_open($node, 'leaser');
is(session_query($leaser, q{BEGIN; SELECT convert_from(payload, 'UTF8') FROM rmsg.get('jobs', 1, '1 hour');},
	'a lease to roll back'), 'leased, rolled back', 'the lease to roll back takes its message');

# Consumers: each round puts 20, leases some for no time (they run out at
# once), nacks some, and handles and acks the rest, every round its own
# transactions.
for my $round (1 .. 30)
{
	$node->safe_psql('postgres', qq{
SELECT count(rmsg.put('jobs', 'r$round n' || i)) FROM generate_series(1, 20) i;
SELECT count(*) FROM rmsg.get('jobs', 3, '0 seconds');
SELECT count(rmsg.nack(msg_id, receipt => receipt)) FROM rmsg.get('jobs', 2, '1 hour');
WITH g AS (SELECT * FROM rmsg.get('jobs', 10, '1 hour')),
     h AS (INSERT INTO handled SELECT convert_from(payload, 'UTF8') FROM g)
SELECT count(rmsg.ack(msg_id, receipt)) FROM g;
});
}
session_query($leaser, 'ROLLBACK;', 'the lease is rolled back');
session_query($slow, 'COMMIT;', 'the slow put commits');

# Drain: everything ready must come out.
for (1 .. 100)
{
	my $got = $node->safe_psql('postgres', q{
WITH g AS (SELECT * FROM rmsg.get('jobs', 100, '1 hour')),
     h AS (INSERT INTO handled SELECT convert_from(payload, 'UTF8') FROM g)
SELECT count(rmsg.ack(msg_id, receipt)) FROM g});
	last if $got == 0;
}
is($node->safe_psql('postgres', q{SELECT ready, in_flight, delayed FROM rmsg.queues WHERE queue = 'jobs'}),
	'0|0|0', 'the queue drains: nothing is held back behind the hint');
is($node->safe_psql('postgres', q{SELECT count(*) FROM handled}), 30 * 20 + 2,
	'every message put was handled once, the slow one and the rolled-back lease\'s too');
is($node->safe_psql('postgres', q{SELECT count(*) FROM handled WHERE payload = 'slow one'}), 1,
	'the slow put\'s message was found once it committed');

session_query($holder, 'COMMIT;', 'the horizon holder ends');
session_kill($_) for ($holder, $slow, $leaser);
$node->stop;
done_testing();
