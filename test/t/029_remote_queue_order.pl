use strict;
use warnings FATAL => 'all';

# Remote queues (remote/): order, one queue holding up the others, and a
# receiving role that takes another's channel name.  Written by an
# attacker's review, which found all three; each check asserts what the
# feature claims.
#  1. A purge_queue (or an ack by msg_id) rolled back held row locks on
#     pending messages: the numbering cuts its batch at the first locked
#     message rather than number later ones first, so the order holds.
#  2. A receiving queue whose lock is held there (a drop_queue in an open
#     transaction): the transfer gives up after lock_timeout and is tried
#     again later, and another remote queue's messages go on arriving.
#  3. A receiving role with put on some queue makes a row for a sender's
#     (future) channel name: channels are per sending role, so the
#     sender's transfers are not refused.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

my $conf = "rmsg.database = 'postgres'\nrmsg.worker_naptime = 200";
my $node_a = new_node('sender_a', workers => 1, extension => 1, conf => $conf);
my $node_c = new_node('receiver_c', workers => 1, extension => 1, conf => $conf);

my $os_user = getpwuid($<);
my ($c_host, $c_port) = ($node_c->host, $node_c->port);
$node_c->safe_psql('postgres', q{
SELECT rmsg.create_queue(q) FROM unnest(ARRAY['in_r', 'in_x', 'in_y', 'in_z', 'mq']) q;
CREATE ROLE mallory LOGIN;
GRANT USAGE ON SCHEMA rmsg TO mallory;
SELECT rmsg.grant_queue('mq', 'mallory', 'put');
});
$node_a->safe_psql('postgres', qq{
CREATE EXTENSION postgres_fdw;
CREATE SERVER c FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (host '$c_host', port '$c_port', dbname 'postgres');
CREATE USER MAPPING FOR CURRENT_USER SERVER c OPTIONS (user '$os_user');
SELECT rmsg.create_remote_queue('to_r', 'c', 'in_r');
SELECT rmsg.create_remote_queue('to_x', 'c', 'in_x');
SELECT rmsg.create_remote_queue('to_y', 'c', 'in_y');
});

sub received
{
	my ($queue) = @_;
	return $node_c->safe_psql('postgres', qq{
SELECT coalesce(string_agg(convert_from(m.inline_data, 'UTF8'), ',' ORDER BY m.msg_id), '')
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = '$queue'});
}

sub state_of
{
	my ($node, $q) = @_;
	return $node->safe_psql('postgres', qq{
SELECT last_sent || '/' || last_acknowledged || '/' || pending || '/' || in_transit
       || ' err=' || coalesce(last_error, '-')
  FROM rmsg.channels WHERE queue = '$q'});
}

#---------------------------------------------------------------------------
# 1. a rolled-back purge reorders
#---------------------------------------------------------------------------
$node_a->safe_psql('postgres', q{
SELECT rmsg.pause_queue('to_r');
SELECT rmsg.put('to_r', 'r1');
SELECT rmsg.put('to_r', 'r2');
});
my $holder = session_open($node_a, 'holder');
session_query($holder, q{BEGIN; SELECT rmsg.purge_queue('to_r');}, 'a purge of to_r, not yet committed');
$node_a->safe_psql('postgres', q{
SELECT rmsg.resume_queue('to_r');
SELECT rmsg.put('to_r', 'r3');
});
# the worker has two seconds of rounds (naptime 200 ms, and the put wakes it)
# to send r3 before r1 and r2, which the purge holds locked: it must not
sleep 2;
is( $node_c->safe_psql('postgres', q{
SELECT count(*) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'in_r'}),
	'0', 'r3 waits behind r1 and r2 while a purge holds them');
session_query($holder, q{ROLLBACK;}, 'the purge rolls back');
ok($node_a->poll_query_until('postgres', q{
SELECT pending = 0 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_r'}), 'to_r drained');
is(received('in_r'), 'r1,r2,r3', 'C holds r1,r2,r3 in put order');

#---------------------------------------------------------------------------
# 2. head-of-line blocking
#---------------------------------------------------------------------------
my $c_holder = session_open($node_c, 'c_holder');
session_query($c_holder, q{BEGIN; SELECT rmsg.drop_queue('in_x');}, 'a drop_queue of in_x on C, open');
$node_a->safe_psql('postgres', q{SELECT rmsg.put('to_x', 'x1')});
sleep 1;    # the worker is now waiting inside accept_transfer for in_x
$node_a->safe_psql('postgres', q{SELECT rmsg.put('to_y', 'y1')});
my $ok = $node_c->poll_query_until('postgres', q{
SELECT count(*) > 0 FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'in_y'});
note('after waiting: to_y ' . state_of($node_a, 'to_y') . '; worker: '
	  . $node_a->safe_psql('postgres', q{SELECT string_agg(backend_type || ' ' || coalesce(wait_event_type,'') || ':' || coalesce(wait_event,''), '; ') FROM pg_stat_activity WHERE backend_type LIKE '%rmsg%' OR backend_type LIKE '%recoverable%'}));
ok($ok, 'y1 reaches C while in_x is locked there');
session_query($c_holder, q{ROLLBACK;}, 'C lets go');
ok($node_c->poll_query_until('postgres', q{
SELECT count(*) > 0 FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'in_y'}),
	'after the lock is gone, y1 arrives');

#---------------------------------------------------------------------------
# 3. channel squatting by a role that may put only to its own queue 'mq'
#---------------------------------------------------------------------------
my $prefix = $node_a->safe_psql('postgres', q{SELECT regexp_replace(channel, ':[0-9]+$', '') FROM rmsg.channels WHERE queue = 'to_y'});
my $next_id = $node_a->safe_psql('postgres', q{SELECT max(queue_id) + 1 FROM rmsg.queue});
$node_c->safe_psql('postgres', qq{
SET ROLE mallory;
SELECT rmsg.accept_transfer('$prefix:$next_id', 'mq', 1, '{}'::bytea[], NULL);
});
$node_a->safe_psql('postgres', q{
SELECT rmsg.create_remote_queue('to_z', 'c', 'in_z');
SELECT rmsg.put('to_z', 'z1');
});
$ok = $node_c->poll_query_until('postgres', q{
SELECT count(*) > 0 FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'in_z'});
note('to_z: ' . state_of($node_a, 'to_z'));
ok($ok, 'z1 reaches C despite mallory (who may put only to mq)');

$_->stop for ($node_a, $node_c);
done_testing();
