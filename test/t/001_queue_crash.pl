use strict;
use warnings FATAL => 'all';

# Crash recovery of the queue store: a real crash (immediate shutdown, no
# checkpoint) while committed and uncommitted puts and acks are in flight.
# Exactly the committed work survives; payload rows match the messages that
# reference them; leases committed lazily may be forgotten, but their
# messages are never lost.

use Digest::MD5 qw(md5_hex);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

#---------------------------------------------------------------------------
# Payloads: "name|" followed by hex digits up to the wanted length, so that
# each one is distinct and names itself; a descriptor "name:length:md5"
# identifies it exactly.
#---------------------------------------------------------------------------

my %payload;

sub payload
{
	my ($name, $len) = @_;
	my $p = "$name|";
	my $i = 0;
	$p .= md5_hex("$name-" . $i++) while length($p) < $len;
	$p = substr($p, 0, $len);
	$payload{$name} = $p;
	return $p;
}

sub descr
{
	my ($name) = @_;
	my $p = $payload{$name};
	return "$name:" . length($p) . ':' . md5_hex($p);
}

# The same descriptor, computed by SQL from a bytea expression.
sub descr_sql
{
	my ($expr) = @_;
	return "split_part(convert_from($expr, 'UTF8'), '|', 1) || ':' || "
	  . "length($expr) || ':' || md5($expr)";
}

sub put_sql
{
	my ($queue, $name, $len, $headers) = @_;
	my $p = payload($name, $len);
	my $h = defined $headers ? ", headers => '$headers'" : '';
	return "SELECT rmsg.put('$queue', '$p'::text$h);";
}

sub batch_sql
{
	my ($queue, $items, $headers) = @_;
	my @lits =
	  map { "convert_to('" . payload($_->[0], $_->[1]) . "', 'UTF8')" } @$items;
	my $h = defined $headers ? ", headers => '$headers'" : '';
	return
	  "SELECT * FROM rmsg.put_batch('$queue', ARRAY[" . join(', ', @lits) . "]$h);";
}

sub sorted_lines
{
	my ($text) = @_;
	return join("\n", sort grep { $_ ne '' } split /\n/, $text);
}

#---------------------------------------------------------------------------
# The node: durable commits explicitly, and a WAL writer so slow that a
# lazily committed lease is most likely still in memory at the crash.
#---------------------------------------------------------------------------

# No background worker: its maintenance would collect payloads and
# dead-letter messages on a schedule of its own, where this file checks what
# the SQL functions do by themselves (011 and 012 test the worker).
# A low inline threshold, so that the puts below cover both layouts: data in
# the message row, and data in a payload row the message references.
my $node = new_node(
	'crash',
	workers => 0,
	conf    => q{
synchronous_commit = on
wal_writer_delay = '10s'
rmsg.inline_payload_max = 256
});

is($node->safe_psql('postgres', 'SHOW synchronous_commit'),
	'on', 'synchronous_commit is on');
is($node->safe_psql('postgres', 'SHOW rmsg.inline_payload_max'),
	'256B', 'payloads above 256 bytes get payload rows');

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION recoverable_msg;
	SELECT rmsg.create_queue('q');
	SELECT rmsg.create_queue('lease_only');
	SELECT rmsg.create_queue('mixed_a');
	SELECT rmsg.create_queue('mixed_b');
	SELECT rmsg.create_queue('mixed_c');
	CREATE TABLE side_effect (what text PRIMARY KEY);
});

my %id;       # name -> msg_id
my @committed_ids;

# Runs a put (or batch) in its own committed transaction and records the ids.
sub put_committed
{
	my ($sql, @names) = @_;
	my @ids = split /\n/, $node->safe_psql('postgres', $sql);
	is(scalar @ids, scalar @names, "put of @names returned one id each");
	@id{@names} = @ids;
	push @committed_ids, @ids;
	return;
}

#--- committed puts: inline (up to 256 bytes) and with payload rows ---------
put_committed(put_sql('q', 'c1', 20), 'c1');
put_committed(put_sql('q', 'c2', 100, '{"k": "c2"}'), 'c2');
put_committed(put_sql('q', 'c3', 256), 'c3');
put_committed(put_sql('q', 'c4', 50), 'c4');
put_committed(put_sql('q', 'b1', 257), 'b1');
put_committed(put_sql('q', 'b2', 1000, '{"k": "b2"}'), 'b2');
put_committed(put_sql('q', 'b3', 9600), 'b3');
put_committed(put_sql('q', 'b4', 300), 'b4');
put_committed(
	batch_sql('q', [ [ 't1', 30 ], [ 't2', 400 ], [ 't3', 256 ], [ 't4', 5000 ] ],
		'{"batch": true}'),
	't1', 't2', 't3', 't4');

is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM rmsg.message WHERE queue_id = "
		  . "(SELECT queue_id FROM rmsg.queue WHERE name = 'q') AND payload_id IS NOT NULL"
	),
	'6',
	'the six payloads above 256 bytes have payload rows');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rmsg.payload'),
	'6', 'six payload rows before any ack');

#--- committed acks, before the crash ---------------------------------------
is($node->safe_psql('postgres', "SELECT rmsg.ack($id{c1})"),
	't', 'committed ack of an inline message');
is($node->safe_psql('postgres', "SELECT rmsg.ack($id{b1})"),
	't', 'committed ack of a message with a payload row');
is($node->safe_psql('postgres', "SELECT rmsg.ack(ARRAY[$id{t2}, -1]::bigint[])"),
	'1', 'committed array ack of a batch message');

#--- uncommitted work: puts in one session, acks in another -----------------
my $u1 = session_open($node, 'uncommitted_puts');
my $u2 = session_open($node, 'uncommitted_acks');
my @uncommitted_ids;

session_query($u1, 'BEGIN;', 'u1 begin');
push @uncommitted_ids, session_query($u1, put_sql('q', 'u1', 40), 'u1 inline put');
push @uncommitted_ids,
  session_query($u1, put_sql('q', 'u2', 2000, '{"k": "u2"}'), 'u1 big put');
push @uncommitted_ids,
  split /\n/,
  session_query($u1, batch_sql('q', [ [ 'u3', 10 ], [ 'u4', 700 ] ]),
	'u1 batch put');
is(scalar @uncommitted_ids, 4, 'four uncommitted puts returned ids');

session_query($u2, 'BEGIN;', 'u2 begin');
is(session_query($u2, "SELECT rmsg.ack($id{b2});", 'u2 ack b2'),
	't', 'uncommitted ack of a message with a payload row');
is( session_query(
		$u2, "SELECT rmsg.ack(ARRAY[$id{c2}, $id{t4}]::bigint[]);",
		'u2 ack c2, t4'),
	'2',
	'uncommitted array ack');

# Durable commits after the uncommitted work flush its WAL too, and the
# checkpoint writes the pages holding the uncommitted tuples: recovery has
# to leave them out because their transactions never committed.
put_committed(put_sql('q', 'c5', 60), 'c5');
put_committed(put_sql('q', 'b5', 600), 'b5');
$node->safe_psql('postgres', 'CHECKPOINT');

# More of both after the checkpoint: redo replays these.
push @uncommitted_ids, session_query($u1, put_sql('q', 'u5', 3000), 'u1 put after checkpoint');
push @uncommitted_ids, session_query($u1, put_sql('q', 'u6', 15), 'u1 inline put after checkpoint');
is(session_query($u2, "SELECT rmsg.ack($id{b4});", 'u2 ack b4'),
	't', 'uncommitted ack after the checkpoint');
put_committed(put_sql('q', 'c6', 70), 'c6');
put_committed(put_sql('q', 'b6', 4000), 'b6');
is($node->safe_psql('postgres', "SELECT rmsg.ack($id{c3})"),
	't', 'committed ack after the checkpoint');

#--- transactions mixing a lease with other writes commit durably ----------
# The one whose other write comes first goes first: those that lease first
# come after it, so that no durable commit follows them before the crash.
put_committed(put_sql('mixed_a', 'ma', 10), 'ma');
put_committed(put_sql('mixed_b', 'mb', 10), 'mb');
put_committed(put_sql('mixed_c', 'mc', 10), 'mc');
put_committed(put_sql('lease_only', 'lo', 10), 'lo');

is( $node->safe_psql(
		'postgres', q{
	BEGIN;
	INSERT INTO side_effect VALUES ('insert before a get');
	SELECT msg_id FROM rmsg.get('mixed_b', visibility => '10 minutes');
	COMMIT;}),
	$id{mb},
	'insert then get in one transaction');
is( $node->safe_psql(
		'postgres', q{
	BEGIN;
	SELECT msg_id FROM rmsg.get('mixed_a', visibility => '10 minutes');
	INSERT INTO side_effect VALUES ('insert after a get');
	COMMIT;}),
	$id{ma},
	'get then insert in one transaction');
is( $node->safe_psql(
		'postgres', qq{
	BEGIN;
	SELECT msg_id FROM rmsg.get('mixed_c', visibility => '10 minutes');
	SELECT rmsg.ack($id{c4});
	COMMIT;}),
	"$id{mc}\nt",
	'get then ack in one transaction');

#--- the last transaction before the crash only leases ----------------------
my $lease_seconds = 3;
my $lease_start = time;
is( $node->safe_psql(
		'postgres',
		"SELECT msg_id || ':' || deliveries FROM rmsg.get('lease_only', visibility => '$lease_seconds seconds')"
	),
	"$id{lo}:1",
	'lease-only get just before the crash');
my $lease_end = time + $lease_seconds;

#--- crash ------------------------------------------------------------------
$node->stop('immediate');
session_kill($u1);
session_kill($u2);
my $log_offset = -s $node->logfile;
$node->start;
my $restarted = time;
ok($node->log_contains(qr/not properly shut down; automatic recovery in progress/, $log_offset),
	'the server went through crash recovery');

#--- exactly the committed puts survive, minus the committed acks ----------
my @survivors = qw(c2 c5 c6 b2 b3 b4 b5 b6 t1 t3 t4);
my $expected = join("\n", sort map { descr($_) } @survivors);

my $stored = $node->safe_psql(
	'postgres', "
	SELECT " . descr_sql('coalesce(m.inline_data, p.data)') . "
	  FROM rmsg.message m
	  JOIN rmsg.queue q USING (queue_id)
	  LEFT JOIN rmsg.payload p USING (payload_id)
	 WHERE q.name = 'q'");
is(sorted_lines($stored), $expected,
	'the stored messages are exactly the committed, unacked puts');

my $uncommitted_list = join(', ', @uncommitted_ids);
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM rmsg.message WHERE msg_id IN ($uncommitted_list)"),
	'0',
	'no uncommitted put survives');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM rmsg.message WHERE msg_id IN ($id{c1}, $id{b1}, $id{t2}, $id{c3}, $id{c4})"
	),
	'0',
	'committed acks stay acked');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM rmsg.message WHERE msg_id IN ($id{b2}, $id{c2}, $id{t4}, $id{b4})"
	),
	'4',
	'messages whose ack did not commit are still there');
is($node->safe_psql('postgres', "SELECT ready FROM rmsg.queues WHERE queue = 'q'"),
	scalar @survivors, 'rmsg.queues counts the survivors as ready');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rmsg.dead_message'),
	'0', 'no dead message appeared');

#--- payload rows: every reference resolves; collection removes the rest ---
my $refs_sql = q{
	WITH r AS (SELECT payload_id FROM rmsg.message WHERE payload_id IS NOT NULL
	           UNION ALL
	           SELECT payload_id FROM rmsg.dead_message WHERE payload_id IS NOT NULL)};
is( $node->safe_psql(
		'postgres',
		"$refs_sql SELECT count(*) FROM r WHERE NOT EXISTS
		   (SELECT 1 FROM rmsg.payload p WHERE p.payload_id = r.payload_id)"),
	'0',
	'every payload reference resolves');
my $orphans_sql = "$refs_sql SELECT count(*) FROM rmsg.payload p WHERE NOT EXISTS
		   (SELECT 1 FROM r WHERE r.payload_id = p.payload_id)";
my $orphans = $node->safe_psql('postgres', $orphans_sql);
is($node->safe_psql('postgres', 'SELECT rmsg.collect_payloads()'),
	$orphans, 'collect_payloads removes exactly the unreferenced payload rows');
is($node->safe_psql('postgres', $orphans_sql), '0', 'no orphaned payload row is left');
is( $node->safe_psql(
		'postgres',
		"$refs_sql SELECT count(*) FROM r WHERE NOT EXISTS
		   (SELECT 1 FROM rmsg.payload p WHERE p.payload_id = r.payload_id)"),
	'0',
	'every payload reference still resolves after the collection');
my @big_survivors = grep { length($payload{$_}) > 256 } @survivors;
is($node->safe_psql('postgres', 'SELECT count(*) FROM rmsg.payload'),
	scalar @big_survivors, 'one payload row per surviving message above 256 bytes');

#--- new ids do not collide with committed ones -----------------------------
$node->safe_psql('postgres', "SELECT rmsg.create_queue('fresh')");
my $new_id = $node->safe_psql('postgres', "SELECT rmsg.put('fresh', 'new'::text)");
like($new_id, qr/^\d+$/, 'a queue created after the crash takes a put');
my $max_committed = (sort { $b <=> $a } @committed_ids)[0];
cmp_ok($new_id, '>', $max_committed, 'a put after the crash gets a fresh msg_id');

#--- mixed transactions were durable, leases included -----------------------
is( $node->safe_psql('postgres', q{SELECT string_agg(what, ',' ORDER BY what) FROM side_effect}),
	'insert after a get,insert before a get',
	'the inserts of the mixed transactions survive');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(queue || ':' || ready || ':' || in_flight, ',' ORDER BY queue)
		   FROM rmsg.queues WHERE queue IN ('mixed_a', 'mixed_b', 'mixed_c')"),
	'mixed_a:0:1,mixed_b:0:1,mixed_c:0:1',
	'the leases taken in mixed transactions survive');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM rmsg.message WHERE msg_id IN ($id{ma}, $id{mb}, $id{mc})"),
	'3',
	'the messages leased in mixed transactions are there');

#--- the lazily committed lease: the message is still deliverable ----------
is($node->safe_psql('postgres', "SELECT count(*) FROM rmsg.message WHERE msg_id = $id{lo}"),
	'1', 'the message leased just before the crash still exists');
my $got = '';
my $deadline = time + 30;
while (time < $deadline)
{
	$got = $node->safe_psql('postgres',
		"SELECT msg_id || ':' || deliveries || ':' || convert_from(payload, 'UTF8')
		   FROM rmsg.get('lease_only', visibility => '10 minutes')");
	last if $got ne '';
	usleep(100_000);
}
my $delivered_at = time;
note(($got =~ /^\d+:1:/)
	? 'the lazily committed lease was forgotten in the crash'
	: 'the lazily committed lease survived the crash');
like($got, qr/^$id{lo}:[12]:\Q$payload{lo}\E$/,
	'the message is delivered again, with 1 or 2 deliveries counted');
my $latest = ($lease_end > $restarted ? $lease_end : $restarted) + 2;
cmp_ok($delivered_at, '<=', $latest,
	'delivered by the end of its visibility timeout at the latest');
if ($got =~ /^\d+:2:/)
{
	cmp_ok($delivered_at, '>=', $lease_start + $lease_seconds,
		'a lease that survived the crash is respected until it ends');
}

#--- drain the queue: everything comes out once, then the payloads go ------
my $drained = $node->safe_psql(
	'postgres',
	"SELECT " . descr_sql('payload') . " || ':' || deliveries || ':' || coalesce(headers::text, '')
	   FROM rmsg.get('q', max => 100, visibility => '10 minutes')");
my %headers = (c2 => '{"k": "c2"}', b2 => '{"k": "b2"}');
$headers{$_} = '{"batch": true}' for qw(t1 t3 t4);
is( sorted_lines($drained),
	join("\n", sort map { descr($_) . ':1:' . ($headers{$_} // '') } @survivors),
	'a get returns every survivor once, with its payload and headers');
my $all_ids = join(', ', map { $id{$_} } @survivors);
is($node->safe_psql('postgres', "SELECT rmsg.ack(ARRAY[$all_ids]::bigint[])"),
	scalar @survivors, 'all survivors acked');
is($node->safe_psql('postgres', 'SELECT rmsg.collect_payloads()'),
	scalar @big_survivors, 'once the survivors are acked, their payload rows are collected');
is($node->safe_psql('postgres', 'SELECT count(*) FROM rmsg.payload'),
	'0', 'no payload row is left');
is($node->safe_psql('postgres', "SELECT count(*) FROM rmsg.get('q')"),
	'0', 'the queue is empty');

$node->stop;
done_testing();
