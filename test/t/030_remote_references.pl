use strict;
use warnings FATAL => 'all';

# Data sent by reference between servers (remote/accept.c,
# worker/transfer.c): a payload row a receiver already holds goes as its
# key alone.  Two servers: sender A, receiver C.  A's remote queues r1, r2
# and r_none go to C's in1, in2 and in_none ('none': never references).
#  1. A fan-out of 100 kB to the three remote queues and a local one: the
#     data crosses once with its key, then twice by key; C keeps it once
#     for in1 and in2 and a copy of its own for in_none; every copy has the
#     bytes put on A.
#  2. Five messages of one payload in one batch: the first carries the
#     data, the four others its key, and C keeps one payload row.
#  3. C collects the payload row (its messages acked): A still believes C
#     holds it and sends the key; C stops there, and A sends the message
#     again with its data.  It arrives once, with the right bytes.
#  4. A message in transit keeps its payload row on A: a collection while
#     C is down, then a crash of A, and the message arrives with its data.
#     (It fails if the collector does not count rmsg.transit.)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

my $conf = "rmsg.database = 'postgres'\nrmsg.worker_naptime = 200";
my $node_a = new_node('sender_a', workers => 1, extension => 1, conf => $conf);
my $node_c = new_node('receiver_c', workers => 1, extension => 1, conf => $conf);

# md5 of the data of each message of a queue on $node, in msg_id order
sub digests
{
	my ($node, $queue) = @_;
	return $node->safe_psql('postgres', qq{
SELECT coalesce(string_agg(md5(coalesce(m.inline_data, p.data)), ',' ORDER BY m.msg_id), '')
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
  LEFT JOIN rmsg.payload p USING (payload_id) WHERE q.name = '$queue'});
}

# waits until nothing of A's remote queues is pending or in transit
sub drained
{
	my ($what) = @_;
	ok( $node_a->poll_query_until('postgres', q{
SELECT bool_and(pending = 0 AND in_transit = 0) FROM rmsg.channels}),
		"$what: everything reached C and was acknowledged");
}

sub by_reference
{
	my ($queue) = @_;
	return $node_a->safe_psql('postgres', qq{
SELECT sent_by_reference FROM rmsg.channels WHERE queue = '$queue'});
}

#---------------------------------------------------------------------------
# Setup
#---------------------------------------------------------------------------

my $os_user = getpwuid($<);
my ($c_host, $c_port) = ($node_c->host, $node_c->port);
$node_c->safe_psql('postgres', q{
SELECT rmsg.create_queue('in1');
SELECT rmsg.create_queue('in2');
SELECT rmsg.create_queue('in_none', dedup => 'none');
});
$node_a->safe_psql('postgres', qq{
CREATE EXTENSION postgres_fdw;
CREATE SERVER c FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (host '$c_host', port '$c_port', dbname 'postgres');
CREATE USER MAPPING FOR CURRENT_USER SERVER c OPTIONS (user '$os_user');
SELECT rmsg.create_remote_queue('r1', 'c', 'in1');
SELECT rmsg.create_remote_queue('r2', 'c', 'in2');
SELECT rmsg.create_remote_queue('r_none', 'c', 'in_none');
SELECT rmsg.create_queue('keep');
-- bytes that do not compress: what crosses is the data, not a short form
CREATE FUNCTION random_bytes(n int) RETURNS bytea LANGUAGE sql AS \$\$
  SELECT decode(string_agg(lpad(to_hex((random() * 255)::int), 2, '0'), ''), 'hex')
    FROM generate_series(1, n) \$\$;
});

#---------------------------------------------------------------------------
# 1. A fan-out crosses once
#---------------------------------------------------------------------------

my $fanned = $node_a->safe_psql('postgres', q{
CREATE TABLE sent AS SELECT random_bytes(100000) AS data;
SELECT count(*) FROM rmsg.put_many(ARRAY['keep', 'r1', 'r2', 'r_none'], (SELECT data FROM sent));
SELECT md5(data) FROM sent;});
($fanned) = (split /\n/, $fanned)[-1];
drained('fan-out');
is(digests($node_c, 'in1') . ' ' . digests($node_c, 'in2') . ' ' . digests($node_c, 'in_none'),
	"$fanned $fanned $fanned", 'in1, in2 and in_none each hold the 100 kB put on A');
is(by_reference('r1') + by_reference('r2') + by_reference('r_none'), 2,
	'A sent the data once, and its key alone to the two other queues');
is( $node_c->safe_psql('postgres', q{
SELECT count(DISTINCT m.payload_id) || ' ' || count(*)
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name IN ('in1', 'in2')}),
	'1 2', 'on C, in1 and in2 reference one payload row');
is( $node_c->safe_psql('postgres', q{
SELECT count(*) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'in_none'
   AND m.payload_id NOT IN (SELECT payload_id FROM rmsg.message WHERE payload_id IS NOT NULL
                              AND queue_id <> m.queue_id)}),
	'1', "in_none ('none') keeps a copy of its own");
is($node_c->safe_psql('postgres', 'SELECT count(*) FROM rmsg.payload_received'),
	'1', 'C remembers the one key it was sent');
is($node_a->safe_psql('postgres', 'SELECT count(*) FROM rmsg.payload_sent'),
	'1', 'A remembers that C holds the payload row');
# the key is the random one A drew for the row, not its payload_id, which
# another role could guess
my ($a_key, $a_payload_id) = split /\|/, $node_a->safe_psql('postgres',
	'SELECT key, payload_id FROM rmsg.payload_key');
is($node_c->safe_psql('postgres', 'SELECT key FROM rmsg.payload_received'),
	$a_key, "C knows the data by A's random key");
isnt($a_key, $a_payload_id, 'which is not the payload_id');

#---------------------------------------------------------------------------
# 2. One payload five times in a batch
#---------------------------------------------------------------------------

my $before = by_reference('r1');
my $repeated = $node_a->safe_psql('postgres', q{
SELECT rmsg.pause_queue('r1');
CREATE TABLE repeated AS SELECT random_bytes(3000) AS data;
DO $$
DECLARE
  t bigint;
BEGIN
  SELECT token INTO t FROM rmsg.put_with_token('r1', (SELECT data FROM repeated));
  FOR i IN 1..4 LOOP
    PERFORM rmsg.put_with_token('r1', NULL, data_token => t);
  END LOOP;
END $$;
SELECT rmsg.resume_queue('r1');
SELECT md5(data) FROM repeated;});
($repeated) = (split /\n/, $repeated)[-1];
drained('five of one payload');
is(digests($node_c, 'in1'), join(',', $fanned, ($repeated) x 5), 'in1 holds the five, in order, with their bytes');
is(by_reference('r1') - $before, 4, 'one batch: the first carried the data, the four others its key');
is( $node_c->safe_psql('postgres', q{
SELECT count(DISTINCT m.payload_id) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'in1' AND m.payload_size = 3000}),
	'1', 'C keeps one payload row for the five');

#---------------------------------------------------------------------------
# 3. C no longer holds what A believes it does
#---------------------------------------------------------------------------

$node_c->safe_psql('postgres', q{
SELECT rmsg.purge_queue('in1'), rmsg.purge_queue('in2'), rmsg.purge_queue('in_none');
SELECT rmsg.collect_payloads();});
is($node_c->safe_psql('postgres', 'SELECT count(*) FROM rmsg.payload_received'),
	'0', 'C collected the payload rows, and forgot their keys');
my $sent_before = by_reference('r1');
ok( $node_a->safe_psql('postgres', q{
SELECT count(*) > 0 FROM rmsg.payload_sent s
  JOIN rmsg.message m USING (payload_id) JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'keep'}) eq 't', 'A still believes C holds the fan-out\'s payload row');
$node_a->safe_psql('postgres', q{
SELECT rmsg.forward(msg_id, 'r1') FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'keep';});
drained('a forward of what C collected');
is(digests($node_c, 'in1'), $fanned, 'the forwarded message arrived once, with its bytes');
is(by_reference('r1') - $sent_before, 0, 'its key was refused, and it went again with its data');
is( $node_a->safe_psql('postgres', q{
SELECT coalesce(max(last_error), '(none)') FROM rmsg.channels}),
	'(none)', 'a key C no longer holds is no error');
is($node_c->safe_psql('postgres', 'SELECT count(*) FROM rmsg.payload_received'),
	'1', 'C remembers the key again');

#---------------------------------------------------------------------------
# 4. A payload row in transit survives a collection and a crash
#---------------------------------------------------------------------------

$node_c->stop;
my $in_transit = $node_a->safe_psql('postgres', q{
CREATE TABLE late AS SELECT random_bytes(50000) AS data;
SELECT rmsg.put('r2', (SELECT data FROM late));
SELECT md5(data) FROM late;});
($in_transit) = (split /\n/, $in_transit)[-1];
ok( $node_a->poll_query_until('postgres', q{
SELECT in_transit = 1 FROM rmsg.channels WHERE queue = 'r2'}),
	'with C down, the message is numbered and in transit');
$node_a->safe_psql('postgres', 'SELECT rmsg.collect_payloads()');
is( $node_a->safe_psql('postgres', q{
SELECT count(*) FROM rmsg.transit t JOIN rmsg.payload p USING (payload_id)}),
	'1', 'the collector left the payload row of the message in transit');
$node_a->stop('immediate');
$node_a->start;
$node_c->start;
drained('after the crash');
is(digests($node_c, 'in2'), $in_transit, 'the message in transit arrived with its data');
$node_a->safe_psql('postgres', 'SELECT rmsg.collect_payloads()');
is($node_a->safe_psql('postgres', q{
SELECT count(*) FROM rmsg.payload p
 WHERE NOT EXISTS (SELECT FROM rmsg.message m WHERE m.payload_id = p.payload_id)}),
	'0', 'once it was acknowledged, A collected its payload row');
is( $node_a->safe_psql('postgres', q{
SELECT count(*) FROM rmsg.payload_sent s
 WHERE NOT EXISTS (SELECT FROM rmsg.payload p WHERE p.payload_id = s.payload_id)}),
	'0', 'and A forgot what C held of the rows it collected');

$node_a->stop;
$node_c->stop;
done_testing();
