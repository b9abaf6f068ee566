use strict;
use warnings FATAL => 'all';

# Remote queues (remote/): a queue made by rmsg.create_remote_queue is a
# local queue whose messages worker 0 moves to a queue of a foreign server
# (postgres_fdw's CREATE SERVER and user mapping), exactly once and in put
# order, whatever crashes or cut connections happen on the way.  A move
# commits on two servers, so a crash or a lost connection between the two
# commits is where a message would be lost or taken twice: the test puts
# such faults in the middle of moves.  Three servers: senders A and B,
# receiver C; A's to_c goes to C's in_a, B's to_c to C's in_b.
#  1. Setup: the extension, postgres_fdw, a server and user mapping to C on
#     A and B, the receiving queues on C.
#  2. 1000 messages per sender, one commit each, put in 10 chunks; between
#     chunks, while the worker is moving them: the sender crashes, the
#     receiver crashes, both at once, the connection is cut on the receiver
#     while its accept_transfer waits inside its transaction there (first
#     for A, then the same for B), then all three crash at once.
#  3. C holds a1..a1000 in in_a and b1..b1000 in in_b, each once and in put
#     order; channel_in says 1000 per channel; the senders' rmsg.channels
#     say 1000 sent and acknowledged, nothing pending, and A's rmsg.message
#     keeps nothing of to_c.
#  4. A receiver down for a while: the messages put meanwhile wait, pending
#     or in transit, last_error says why; once it is back they arrive, after
#     the others and in order; a batch counts its messages' headers toward
#     its 64 MB as it counts their data.  Then the window between the receiver's
#     commit and the sender's, held open by a row lock, and the sender
#     crashes in it: the batch comes again and the receiver skips it.
#  5. Refusals: a server that does not exist (42704), a role without USAGE
#     on the server (42501), get on a remote queue (42809); a remote queue
#     naming a queue the receiver does not have: the receiver refuses, the
#     error is recorded, the message is kept, and the other channel still
#     works.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

use constant CHUNKS => 10;
use constant CHUNK  => 100;
use constant TOTAL  => CHUNKS * CHUNK;

my $conf = "rmsg.database = 'postgres'\nrmsg.worker_naptime = 200";
my $node_a = new_node('sender_a', workers => 1, extension => 1, conf => $conf);
my $node_b = new_node('sender_b', workers => 1, extension => 1, conf => $conf);
my $node_c = new_node('receiver_c', workers => 1, extension => 1, conf => $conf);

#---------------------------------------------------------------------------
# Helpers
#---------------------------------------------------------------------------

# rmsg.channels of a remote queue on a sender, as "last_sent/last_acknowledged/pending/in_transit"
sub channel_state
{
	my ($node, $queue) = @_;
	return $node->safe_psql('postgres', qq{
SELECT last_sent || '/' || last_acknowledged || '/' || pending || '/' || in_transit
  FROM rmsg.channels WHERE queue = '$queue'});
}

# The payloads of a queue on C, in msg_id (arrival) order, comma-separated
sub received
{
	my ($queue) = @_;
	return $node_c->safe_psql('postgres', qq{
SELECT string_agg(convert_from(m.inline_data, 'UTF8'), ',' ORDER BY m.msg_id)
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = '$queue'});
}

# "count distinct" of the payloads of a queue on C: tells a loss from a duplicate
sub received_counts
{
	my ($queue) = @_;
	return $node_c->safe_psql('postgres', qq{
SELECT count(*) || ' ' || count(DISTINCT convert_from(m.inline_data, 'UTF8'))
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = '$queue'});
}

# Puts $prefix$from .. $prefix$to into to_c, each in a transaction of its own
sub put_range
{
	my ($node, $prefix, $from, $to) = @_;
	$node->safe_psql('postgres', qq{
DO \$\$
BEGIN
  FOR i IN $from..$to LOOP
    PERFORM rmsg.put('to_c', '$prefix' || i);
    COMMIT;
  END LOOP;
END \$\$;});
}

# crashes the nodes together, then starts them again
sub restart_immediate
{
	my @nodes = @_;
	$_->stop('immediate') for @nodes;
	$_->start for @nodes;
}

# A connection cut in the middle of a transfer.  Before the chunk is put,
# a session on C locks the sender's channel row; the sender's next
# accept_transfer then waits for it, inside its transaction on C.  After
# the chunk, the test waits for that, terminates the waiting backend (the
# connection is cut mid-transfer: C rolls back what it had put of the
# batch, and the sender never hears an answer), and lets go of the row.
my $channel_holder;

sub hold_channel
{
	my ($channel) = @_;
	$channel_holder = session_open($node_c, 'channel_holder');
	session_query($channel_holder, qq{BEGIN;
SELECT last_seq FROM rmsg.channel_in WHERE channel = '$channel' FOR UPDATE;},
		'a session on C holds the channel row');
}

sub cut_transfer
{
	ok( $node_c->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE application_name = 'recoverable_msg transfer' AND wait_event_type = 'Lock'}),
		'the sender\'s transfer waits on C for the channel row');
	is( $node_c->safe_psql('postgres', q{
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE application_name = 'recoverable_msg transfer' AND wait_event_type = 'Lock'}),
		'1', 'its connection is cut in the middle of the transfer');
	session_query($channel_holder, 'ROLLBACK;', 'the channel row is let go');
	session_kill($channel_holder);
}

#---------------------------------------------------------------------------
# 1. Setup
#---------------------------------------------------------------------------

my $os_user = getpwuid($<);
my ($c_host, $c_port) = ($node_c->host, $node_c->port);
$node_c->safe_psql('postgres', q{
SELECT rmsg.create_queue('in_a');
SELECT rmsg.create_queue('in_b');
});
for my $s ([ $node_a, 'in_a' ], [ $node_b, 'in_b' ])
{
	my ($node, $target) = @$s;
	$node->safe_psql('postgres', qq{
CREATE EXTENSION postgres_fdw;
CREATE SERVER c FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (host '$c_host', port '$c_port', dbname 'postgres');
CREATE USER MAPPING FOR CURRENT_USER SERVER c OPTIONS (user '$os_user');
SELECT rmsg.create_remote_queue('to_c', 'c', '$target');
});
	is(channel_state($node, 'to_c'), '0/0/0/0', $node->name . ': rmsg.channels shows the new remote queue, empty');
}
my ($chan_a, $chan_b) =
  map { $_->safe_psql('postgres', q{SELECT channel FROM rmsg.channels WHERE queue = 'to_c'}) } ($node_a, $node_b);
isnt($chan_a, $chan_b, 'the two senders have channels of different names');

#---------------------------------------------------------------------------
# 2. Transfer through crashes and cut connections
#---------------------------------------------------------------------------

# What happens after chunk $k, and which sender it is about: that one gets
# its chunk last, and we wait until its worker is moving it.
my @events = (
	[ 'a',  'A crashes',            sub { restart_immediate($node_a) } ],
	[ 'a',  'C crashes',            sub { restart_immediate($node_c) } ],
	[ 'a',  'A and C crash at once', sub { restart_immediate($node_a, $node_c) } ],
	[ 'a',  'a connection cut on C mid-transfer', \&cut_transfer, sub { hold_channel($chan_a) } ],
	[ 'b',  'B crashes',            sub { restart_immediate($node_b) } ],
	[ 'b',  'C crashes',            sub { restart_immediate($node_c) } ],
	[ 'b',  'B and C crash at once', sub { restart_immediate($node_b, $node_c) } ],
	[ 'b',  'a connection cut on C mid-transfer', \&cut_transfer, sub { hold_channel($chan_b) } ],
	[ 'ab', 'A, B and C crash at once', sub { restart_immediate($node_a, $node_b, $node_c) } ]);

for my $k (1 .. CHUNKS)
{
	my ($from, $to) = (($k - 1) * CHUNK + 1, $k * CHUNK);
	my ($about, $what, $inject, $before) = @{ $events[ $k - 1 ] // [ '', '', undef, undef ] };
	my @order = $about eq 'b' ? ([ $node_a, 'a' ], [ $node_b, 'b' ]) : ([ $node_b, 'b' ], [ $node_a, 'a' ]);
	$before->() if $before;
	put_range(@$_, $from, $to) for @order;
	next unless $inject;

	# (a held channel row keeps the worker from moving it: cut_transfer
	# waits for that instead)
	for my $s (grep { !$before && index($about, $_->[1]) >= 0 } @order)
	{
		ok( $s->[0]->poll_query_until('postgres', qq{
SELECT last_sent >= $from FROM rmsg.channels WHERE queue = 'to_c'}),
			"chunk $k: the worker of " . uc($s->[1]) . ' is moving it');
	}
	note("after chunk $k: $what");
	$inject->();
}

for my $node ($node_a, $node_b)
{
	ok( $node->poll_query_until('postgres', q{
SELECT pending = 0 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_c'}),
		$node->name . ': every message of to_c reached C and was acknowledged');
}

#---------------------------------------------------------------------------
# 3. Exactly once, in order
#---------------------------------------------------------------------------

for my $s ([ $node_a, 'a', 'in_a', $chan_a ], [ $node_b, 'b', 'in_b', $chan_b ])
{
	my ($node, $p, $queue, $chan) = @$s;
	is(received_counts($queue), TOTAL . ' ' . TOTAL, "C holds " . TOTAL . " distinct messages in $queue");
	is(received($queue), join(',', map { "$p$_" } 1 .. TOTAL),
		"$queue holds ${p}1..$p" . TOTAL . ' each exactly once and in put order');
	is($node_c->safe_psql('postgres', qq{SELECT last_seq FROM rmsg.channel_in WHERE channel = '$chan'}),
		TOTAL, "C's channel_in: the last sequence number taken from $chan is " . TOTAL);
	is(channel_state($node, 'to_c'), TOTAL . '/' . TOTAL . '/0/0',
		$node->name . ': all sent, all acknowledged, nothing pending or in transit');
	note($node->name . ': last_error after the crashes: '
		  . $node->safe_psql('postgres', q{SELECT coalesce(last_error, '(none)') FROM rmsg.channels WHERE queue = 'to_c'}));
}
is( $node_a->safe_psql('postgres', q{
SELECT count(*) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'to_c'}),
	'0', 'no message of to_c is left in rmsg.message on A');

#---------------------------------------------------------------------------
# 4. A receiver down for a while
#---------------------------------------------------------------------------

# (and a queue of messages with small data and large headers, for 4a)
$node_c->safe_psql('postgres', q{SELECT rmsg.create_queue('in_h')});
$node_a->safe_psql('postgres', q{SELECT rmsg.create_remote_queue('to_h', 'c', 'in_h')});
my $before_stop = $node_a->safe_psql('postgres', 'SELECT clock_timestamp()');
$node_c->stop('fast');
put_range($node_a, 'a', TOTAL + 1, TOTAL + 20);

# 4a. Headers count toward a batch's 64 MB as data does (they have no limit
# of their own): three messages of 30 MB of headers each and a byte of data
# are numbered two, then one.  Counting data alone, one batch of 90 MB of
# headers and larger ones failed to send, every round, for ever.
use constant HEADER_MB => 30;
$node_a->safe_psql('postgres', q{
SELECT count(rmsg.put('to_h', i::text,
                      headers => jsonb_build_object('h', repeat('y', } . HEADER_MB . q{ * 1024 * 1024))))
  FROM generate_series(1, 3) i});
ok( $node_a->poll_query_until('postgres', q{
SELECT in_transit > 0 FROM rmsg.channels WHERE queue = 'to_h'}),
	'with C down, the worker numbered a batch of to_h');
is( $node_a->safe_psql('postgres', q{
SELECT in_transit || ' in transit, ' || pending || ' pending' FROM rmsg.channels WHERE queue = 'to_h'}),
	'2 in transit, 1 pending',
	'headers count toward the 64 MB of a batch: two of the three messages with ' . HEADER_MB . ' MB of headers');
ok( $node_a->poll_query_until('postgres', qq{
SELECT last_error IS NOT NULL AND last_error_at > '$before_stop' FROM rmsg.channels WHERE queue = 'to_c'}),
	'with C down, the failed attempts set last_error');
is( $node_a->safe_psql('postgres', q{
SELECT pending + in_transit || ' ' || last_acknowledged FROM rmsg.channels WHERE queue = 'to_c'}),
	'20 ' . TOTAL, 'the 20 new messages wait, pending or in transit, none acknowledged');
$node_c->start;
ok( $node_a->poll_query_until('postgres', q{
SELECT pending = 0 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_c'}),
	'once C is back, the waiting messages are moved and acknowledged');
is(received('in_a'), join(',', map { "a$_" } 1 .. TOTAL + 20),
	'C holds a1..a' . (TOTAL + 20) . ' in in_a, each once and in put order');
is(channel_state($node_a, 'to_c'), (TOTAL + 20) . '/' . (TOTAL + 20) . '/0/0',
	'A: all ' . (TOTAL + 20) . ' sent and acknowledged');
ok( $node_a->poll_query_until('postgres', q{
SELECT pending = 0 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_h'}),
	'the messages with large headers were moved too');
my $header_bytes = HEADER_MB * 1024 * 1024 + length('{"h": ""}');
is( $node_c->safe_psql('postgres', q{
SELECT string_agg(convert_from(m.inline_data, 'UTF8') || ':' || octet_length(m.headers::text), ','
                  ORDER BY m.msg_id)
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'in_h'}),
	join(',', map { "$_:$header_bytes" } 1 .. 3),
	'C holds them whole, in order');

#---------------------------------------------------------------------------
# 4b. The window between the two commits, held open: the receiver has
#     committed a batch, the sender has not yet forgotten it (its step 3
#     waits for a row lock held here), and the sender crashes.  It sends
#     the batch again after the restart, and the receiver must skip what
#     it has: exactly once, not at least once.
#---------------------------------------------------------------------------

$node_c->stop('fast');
put_range($node_a, 'a', TOTAL + 21, TOTAL + 25);
ok( $node_a->poll_query_until('postgres', q{
SELECT in_transit > 0 AND pending + in_transit = 5 FROM rmsg.channels WHERE queue = 'to_c'}),
	'with C down, the first of five messages is numbered and in transit');
# numbering waits until nothing is in transit: the rest stay pending
my $numbered = $node_a->safe_psql('postgres', q{SELECT in_transit FROM rmsg.channels WHERE queue = 'to_c'});
my $holder = session_open($node_a, 'holder');
session_query($holder, q{BEGIN;
SELECT seq FROM rmsg.transit FOR SHARE;}, 'a session holds the transit rows');
# ($chan_a: A's channel, read in section 1)
$node_c->start;
ok( $node_c->poll_query_until('postgres', qq{
SELECT last_seq = ${\ (TOTAL + 20) } + $numbered FROM rmsg.channel_in WHERE channel = '$chan_a'}),
	'C commits the batch, while A cannot forget it');
is(channel_state($node_a, 'to_c'), (TOTAL + 20 + $numbered) . '/' . (TOTAL + 20) . '/' . (5 - $numbered) . "/$numbered",
	'A still has the batch in transit');
$node_a->stop('immediate');
$node_a->start;
ok( $node_a->poll_query_until('postgres', q{
SELECT pending = 0 AND in_transit = 0 AND last_acknowledged = last_sent
  FROM rmsg.channels WHERE queue = 'to_c'}),
	'after the crash A sends the batch again, and C acknowledges it');
is(received_counts('in_a'), (TOTAL + 25) . ' ' . (TOTAL + 25),
	'C skipped the numbers it had: no message twice');
is(received('in_a'), join(',', map { "a$_" } 1 .. TOTAL + 25),
	'in_a holds a1..a' . (TOTAL + 25) . ' in put order');

#---------------------------------------------------------------------------
# 4c. An idle remote queue costs no writes: the worker's passes over it
#     (every 200 ms here) number nothing and write nothing, so they make no
#     commit to flush.  The numbering once locked and updated the queue's
#     row on every pass (a commit and a WAL flush each time): the row's
#     version (xmin, ctid) and its lock (xmax) must stay as they are.
#---------------------------------------------------------------------------
my $row_sql = q{SELECT r.xmin::text || ' ' || r.ctid::text || ' ' || r.xmax::text
  FROM rmsg.remote_queue r JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'to_c'};
my $row_before = $node_a->safe_psql('postgres', $row_sql);
sleep 2;
is($node_a->safe_psql('postgres', $row_sql), $row_before,
	'two seconds of idle passes leave the queue\'s row untouched');

#---------------------------------------------------------------------------
# 5. Refusals
#---------------------------------------------------------------------------

$node_a->safe_psql('postgres', qq{
-- the SQLSTATE a statement fails with, 'ok' if it does not
CREATE FUNCTION sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END \$\$;
CREATE ROLE app NOLOGIN;
GRANT USAGE ON SCHEMA rmsg TO app;
GRANT EXECUTE ON FUNCTION rmsg.create_remote_queue(text, text, text) TO app;
GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval) TO app;
-- a user mapping, so that the only thing app lacks is USAGE on the server
CREATE USER MAPPING FOR app SERVER c OPTIONS (user '$os_user');
});
is( $node_a->safe_psql('postgres', q{
SELECT sqlstate_of($$SELECT rmsg.create_remote_queue('to_x', 'no_such_server', 'in_a')$$)}),
	'42704', 'a remote queue on a server that does not exist: 42704');
is( $node_a->safe_psql('postgres', q{
SET ROLE app; SELECT sqlstate_of($$SELECT rmsg.create_remote_queue('to_app', 'c', 'in_a')$$)}),
	'42501', 'a role without USAGE on the foreign server: 42501');
is( $node_a->safe_psql('postgres', q{
SELECT count(*) FROM rmsg.queue WHERE name IN ('to_x', 'to_app')}),
	'0', 'neither refused remote queue was made');
is( $node_a->safe_psql('postgres', q{SELECT sqlstate_of($$SELECT * FROM rmsg.get('to_c')$$)}),
	'42809', 'get on a remote queue: 42809');

# A remote queue naming a queue C does not have: C refuses every transfer.
$node_a->safe_psql('postgres', q{
SELECT rmsg.create_remote_queue('to_nowhere', 'c', 'no_such_queue');
SELECT rmsg.put('to_nowhere', 'lost?'::text);
});
ok( $node_a->poll_query_until('postgres', q{
SELECT last_error IS NOT NULL FROM rmsg.channels WHERE queue = 'to_nowhere'}),
	'a remote queue the receiver does not have: the refusal is recorded in last_error');
note('its last_error: '
	  . $node_a->safe_psql('postgres', q{SELECT last_error FROM rmsg.channels WHERE queue = 'to_nowhere'}));
is( $node_a->safe_psql('postgres', q{
SELECT pending + in_transit || ' ' || last_acknowledged FROM rmsg.channels WHERE queue = 'to_nowhere'}),
	'1 0', 'the refused message is kept, pending or in transit, and not acknowledged');
my $chan_nowhere = $node_a->safe_psql('postgres', q{SELECT channel FROM rmsg.channels WHERE queue = 'to_nowhere'});
is( $node_c->safe_psql('postgres', qq{
SELECT coalesce(max(last_seq), 0) FROM rmsg.channel_in WHERE channel = '$chan_nowhere'}),
	'0', 'C took nothing from that channel');
# the refused channel does not hold up the good one
put_range($node_a, 'a', TOTAL + 26, TOTAL + 26);
ok( $node_a->poll_query_until('postgres', q{
SELECT pending = 0 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_c'}),
	'meanwhile a message of to_c still reaches C');
is(received_counts('in_a'), (TOTAL + 26) . ' ' . (TOTAL + 26), 'in_a has it, once');

$_->stop for ($node_a, $node_b, $node_c);
done_testing();
