use strict;
use warnings FATAL => 'all';

# Remote queues (remote/) where an acknowledged message could be lost.
# Written by an attacker's review, which found both; each check asserts
# what the feature claims.
#  1. A receiver whose sending role commits asynchronously
#     (synchronous_commit = off): it acknowledges a batch, the sender
#     forgets it, and the receiver crashes.  accept_transfer's commit is
#     flushed whatever the session's setting, so the batch survives; and a
#     channel the receiver no longer knows could not be opened past 1.
#  2. DROP EXTENSION and CREATE EXTENSION on the sender: the remote queue
#     made again gets the same queue_id.  Its channel has a random part,
#     so it is a new channel at the receiver, which does not skip its first
#     messages as numbers it holds.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

my $conf = "rmsg.database = 'postgres'\nrmsg.worker_naptime = 200";
my $node_a = new_node('sender_a', workers => 1, extension => 1, conf => $conf);
my $node_b = new_node('sender_b', workers => 1, extension => 1, conf => $conf);
# receiver: the WAL writer flushes async commits every 10 s only
my $node_c = new_node('receiver_c', workers => 1, extension => 1,
	conf => "$conf\nwal_writer_delay = 10000ms\nautovacuum = off");

my $os_user = getpwuid($<);
my ($c_host, $c_port) = ($node_c->host, $node_c->port);
$node_c->safe_psql('postgres', qq{
CREATE ROLE recv_async LOGIN;
GRANT USAGE ON SCHEMA rmsg TO recv_async;
SELECT rmsg.create_queue('in_a');
SELECT rmsg.create_queue('in_b');
SELECT rmsg.grant_queue('in_a', 'recv_async', 'put');
-- a common tuning on the receiving side: the role (or database, or server)
-- commits asynchronously
ALTER ROLE recv_async SET synchronous_commit = off;
});
for my $s ([ $node_a, 'in_a', 'recv_async' ], [ $node_b, 'in_b', $os_user ])
{
	my ($node, $target, $user) = @$s;
	$node->safe_psql('postgres', qq{
CREATE EXTENSION postgres_fdw;
CREATE SERVER c FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (host '$c_host', port '$c_port', dbname 'postgres');
CREATE USER MAPPING FOR CURRENT_USER SERVER c OPTIONS (user '$user');
SELECT rmsg.create_remote_queue('to_c', 'c', '$target');
});
}

sub state_of
{
	my ($node, $q) = @_;
	return $node->safe_psql('postgres', qq{
SELECT last_sent || '/' || last_acknowledged || '/' || pending || '/' || in_transit
       || ' err=' || coalesce(last_error, '-')
  FROM rmsg.channels WHERE queue = '$q'});
}

sub received
{
	my ($queue) = @_;
	return $node_c->safe_psql('postgres', qq{
SELECT coalesce(string_agg(convert_from(m.inline_data, 'UTF8'), ',' ORDER BY m.msg_id), '')
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = '$queue'});
}

#---------------------------------------------------------------------------
# 1. receiver commits asynchronously
#---------------------------------------------------------------------------
$node_a->safe_psql('postgres', q{SELECT rmsg.put('to_c', 'x' || i) FROM generate_series(1, 5) i});
ok($node_a->poll_query_until('postgres', q{
SELECT last_acknowledged = 5 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_c'}),
	'A: the 5 messages are acknowledged and forgotten');
$node_c->stop('immediate');
$node_c->start;
note('A after the receiver crash: ' . state_of($node_a, 'to_c'));
is(received('in_a'), 'x1,x2,x3,x4,x5', 'C still holds x1..x5 after its crash (acknowledged ones)');
$node_a->safe_psql('postgres', q{SELECT rmsg.put('to_c', 'x6')});
$node_a->poll_query_until('postgres', q{SELECT last_error LIKE '%expects%' OR in_transit + pending = 0 FROM rmsg.channels WHERE queue = 'to_c'});
note('A after one more put: ' . state_of($node_a, 'to_c'));
is(received('in_a'), 'x1,x2,x3,x4,x5,x6', 'x6 arrives');

#---------------------------------------------------------------------------
# 2. DROP EXTENSION / CREATE EXTENSION on sender B
#---------------------------------------------------------------------------
$node_b->safe_psql('postgres', q{SELECT rmsg.put('to_c', 'old' || i) FROM generate_series(1, 5) i});
ok($node_b->poll_query_until('postgres', q{
SELECT last_acknowledged = 5 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_c'}),
	'B: old1..old5 delivered');
my $chan_before = $node_b->safe_psql('postgres', q{SELECT channel FROM rmsg.channels WHERE queue = 'to_c'});
$node_b->safe_psql('postgres', q{
DROP EXTENSION recoverable_msg CASCADE;
CREATE EXTENSION recoverable_msg;
SELECT rmsg.create_remote_queue('to_c', 'c', 'in_b');
SELECT rmsg.put('to_c', 'new' || i) FROM generate_series(1, 3) i;
});
my $chan_after = $node_b->safe_psql('postgres', q{SELECT channel FROM rmsg.channels WHERE queue = 'to_c'});
note("channel before: $chan_before, after: $chan_after");
$node_b->poll_query_until('postgres', q{SELECT pending = 0 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_c'});
$node_b->safe_psql('postgres', q{SELECT rmsg.put('to_c', 'new4')});
sleep 3;
note('B after the new puts: ' . state_of($node_b, 'to_c'));
is(received('in_b'), 'old1,old2,old3,old4,old5,new1,new2,new3,new4',
	'C holds old1..5 and new1..4');
is($node_b->safe_psql('postgres', q{SELECT pending + in_transit FROM rmsg.channels WHERE queue = 'to_c'}),
	'0', 'nothing left behind on B');

$_->stop for ($node_a, $node_b, $node_c);
done_testing();
