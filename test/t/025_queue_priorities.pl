use strict;
use warnings FATAL => 'all';

# Priorities on a real server (queue/priorities.c): each priority of a
# queue is a lane of the ready index with a hint of its own.
#  1. A held horizon: churn in a high lane costs the first get one walk,
#     and the next ones a handful of index entries, lanes included; a queue
#     that never saw a priority walks lane 0 alone.
#  2. A crash loses the hints and what they knew of the lanes: the first
#     get after it finds the lanes in the index and takes the highest.
#  3. The worker hands out in the same order: a paused queue filled at
#     random priorities is handled highest first once resumed.
#  4. The worker's idle passes read one entry per lane of a queue of
#     delayed messages, not the whole queue.
# Counted in index entries read (idx_tup_read), which do not depend on the
# machine's speed.  The random mix of TAP 023 puts at several priorities.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

use constant CHURN => 2000;

my $node = new_node('prio', workers => 1, extension => 1, conf => q{
autovacuum = off
rmsg.database = 'postgres'
});
$node->safe_psql('postgres', q{
SELECT rmsg.create_queue('lanes');
SELECT rmsg.create_queue('plain');
});

#---------------------------------------------------------------------------
# 1. A held horizon
#---------------------------------------------------------------------------
my $holder = session_open($node, 'holder');
session_query($holder, q{BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT txid_current() > 0;}, 'the horizon holder starts');

# The index entries one get of a queue reads, and what it took.
sub get_cost
{
	my ($queue) = @_;
	my $out = $node->safe_psql('postgres', qq{
SET stats_fetch_consistency = none;
SELECT pg_stat_force_next_flush();
SELECT 'before', idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
SELECT 'took', coalesce(string_agg(convert_from(payload, 'UTF8'), ','), '-') FROM rmsg.get('$queue', 1, '1 hour');
SELECT pg_stat_force_next_flush();
SELECT 'after', idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
});
	my %v = $out =~ /^(before|took|after)\|(.*)$/mg;
	return ($v{after} - $v{before}, $v{took});
}

# Churn in lane 9 and lane 4, put and acked with no get between.
$node->safe_psql('postgres', qq{
DO \$\$
BEGIN
  FOR b IN 1..${\ (CHURN / 100) } LOOP
    PERFORM rmsg.ack(array_agg(id))
       FROM rmsg.put_batch('lanes', (SELECT array_agg(convert_to('m' || i, 'UTF8'))
                                       FROM generate_series(1, 100) i),
                           priority => CASE WHEN b % 2 = 0 THEN 9 ELSE 4 END) id;
    COMMIT;
  END LOOP;
END \$\$;
});
$node->safe_psql('postgres', q{
SELECT rmsg.put('lanes', 'low'::text);
SELECT rmsg.put('lanes', 'high'::text, priority => 9);
SELECT rmsg.put('lanes', 'mid'::text, priority => 4);
});
my ($walk1, $took1) = get_cost('lanes');
my ($walk2, $took2) = get_cost('lanes');
my ($walk3, $took3) = get_cost('lanes');
note("index entries the gets after the churn read: $walk1, $walk2, $walk3");
is("$took1|$took2|$took3", 'high|mid|low', 'the gets take the lanes highest first');
cmp_ok($walk1, '>=', CHURN / 2, 'the first get walks the acked entries of its lane once');
cmp_ok($walk2, '<', CHURN / 2 + 10, 'the second walks only what the first did not');
$node->safe_psql('postgres', q{SELECT rmsg.put('lanes', 'high again'::text, priority => 9)});
my ($walk4, $took4) = get_cost('lanes');
$node->safe_psql('postgres', q{SELECT rmsg.put('lanes', 'low again'::text)});
my ($walk5, $took5) = get_cost('lanes');
note("then: $walk4, $walk5");
is("$took4|$took5", 'high again|low again', 'each get takes its message');
cmp_ok($walk4, '<', 10, 'a get walking three lanes starts past the acked entries of each');
cmp_ok($walk5, '<', 10, 'and so does the one after');

# Ten lanes used, each with acked entries kept by the horizon: a get walks
# each lane once from its hint.
$node->safe_psql('postgres', q{
SELECT rmsg.ack(id) FROM generate_series(0, 9) p, rmsg.put('lanes', 'x'::text, priority => p) id;
SELECT rmsg.put('lanes', 'bottom'::text);
});
get_cost('lanes');
$node->safe_psql('postgres', q{SELECT rmsg.put('lanes', 'bottom again'::text)});
my ($walk10, $took10) = get_cost('lanes');
note("ten lanes: $walk10 entries");
is($took10, 'bottom again', 'the get finds the message in the last lane');
cmp_ok($walk10, '<', 20, 'walking ten lanes reads about one entry per lane');

# A queue that never saw a priority walks lane 0 alone.
$node->safe_psql('postgres', q{SELECT rmsg.put('plain', 'p1'::text)});
get_cost('plain');
$node->safe_psql('postgres', q{SELECT rmsg.put('plain', 'p2'::text)});
my ($plain, $took_plain) = get_cost('plain');
is($took_plain, 'p2', 'a plain queue takes its message');
cmp_ok($plain, '<=', 2, 'reading one or two entries: no lane but its own');
session_query($holder, 'COMMIT;', 'the horizon holder ends');
session_kill($holder);

#---------------------------------------------------------------------------
# 2. A crash
#---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
SELECT rmsg.purge_queue('lanes');
SELECT rmsg.put('lanes', 'zero'::text);
SELECT rmsg.put('lanes', 'three'::text, priority => 3);
SELECT rmsg.put('lanes', 'eight'::text, priority => 8);
SELECT rmsg.put('lanes', 'three b'::text, priority => 3);
});
$node->stop('immediate');
$node->start;
is( $node->safe_psql('postgres', q{
SELECT string_agg(convert_from(payload, 'UTF8'), ',' ORDER BY n)
  FROM rmsg.get('lanes', 1, '1 hour') WITH ORDINALITY AS g(msg_id, payload, h, d, e, t, r, n)}),
	'eight', 'after a crash the first get finds the lanes and takes the highest');
is( $node->safe_psql('postgres', q{
SELECT string_agg(convert_from(payload, 'UTF8'), ',' ORDER BY n)
  FROM rmsg.get('lanes', 10, '1 hour') WITH ORDINALITY AS g(msg_id, payload, h, d, e, t, r, n)}),
	'three,three b,zero', 'then the next lanes, in order');

#---------------------------------------------------------------------------
# 3. The worker
#---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE handled (seq bigserial PRIMARY KEY, payload text, priority int);
CREATE FUNCTION record(payload bytea, headers jsonb) RETURNS void LANGUAGE sql
  AS $$ INSERT INTO handled (payload, priority)
        VALUES (convert_from(payload, 'UTF8'), (headers->>'p')::int) $$;
SELECT rmsg.create_queue('work');
SELECT rmsg.pause_queue('work');
SELECT rmsg.subscribe('work', 'record(bytea,jsonb)', 1);
SELECT count(*) FROM (
  SELECT rmsg.put('work', 'w' || i, jsonb_build_object('p', p), priority => p)
    FROM generate_series(1, 40) i, LATERAL (SELECT (i * 7) % 10 AS p) x) puts;
SELECT rmsg.resume_queue('work');
});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 40 FROM handled}),
	'the worker handles every message once the queue is resumed');
is( $node->safe_psql('postgres', q{
SELECT count(*) FROM handled a JOIN handled b ON b.seq = a.seq + 1 WHERE b.priority > a.priority}),
	'0', 'the worker handled them highest priority first');
is( $node->safe_psql('postgres', q{
SELECT string_agg(payload, ',' ORDER BY seq) FROM handled WHERE priority = 7}),
	'w1,w11,w21,w31', 'and in put order within a priority');

#---------------------------------------------------------------------------
# 4. The worker's idle pass asks when the next delayed message of each
#    subscribed queue comes due: one index descent per lane, not a read of
#    the whole queue (with priority second in the ready index, a query
#    ordered by visible_at alone read every entry of the queue and sorted
#    them on each pass: 20,000 delayed messages, 20,000 entries a pass).
#---------------------------------------------------------------------------
$node->append_conf('postgresql.conf', "rmsg.worker_naptime = 200\n");
$node->reload;
$node->safe_psql('postgres', q{
SELECT rmsg.create_queue('later');
SELECT count(*) FROM rmsg.put_batch('later', (SELECT array_agg(convert_to('l' || i, 'UTF8'))
                                                FROM generate_series(1, 20000) i));
UPDATE rmsg.message m SET visible_at = now() + interval '1 hour'
  FROM rmsg.queue q WHERE q.queue_id = m.queue_id AND q.name = 'later';
SELECT rmsg.subscribe('later', 'record(bytea,jsonb)');
});
# let the worker read the new subscription and go idle
$node->safe_psql('postgres', q{SELECT pg_sleep(1)});
my $idle = $node->safe_psql('postgres', q{
SET stats_fetch_consistency = none;
SELECT pg_stat_force_next_flush();
SELECT 'before', idx_tup_read + coalesce((SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'message' AND schemaname = 'rmsg'), 0)
  FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
SELECT pg_sleep(2);
SELECT pg_stat_force_next_flush();
SELECT 'after', idx_tup_read + coalesce((SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'message' AND schemaname = 'rmsg'), 0)
  FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
});
my %idle = $idle =~ /^(before|after)\|(\d+)$/mg;
my $idle_read = $idle{after} - $idle{before};
note("rows and index entries read in 2 s of idle passes beside 20,000 delayed messages: $idle_read");
cmp_ok($idle_read, '<', 2000, 'idle passes read a few entries per lane, not the whole queue');

$node->stop;
done_testing();
