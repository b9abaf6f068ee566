use strict;
use warnings FATAL => 'all';

# An instance's receive must read its own line only, however few instances
# hold messages.  With two instances, the statistics once made a scan of
# instance_message_pkey in msg_id order (instance_id a mere filter) look
# cheapest, and a receive on an empty instance walked all 20,000 messages
# of its neighbour.  auto_explain logs the plans of the statements receive
# runs; they must reach rows through the line's indexes only, and the
# receive must read a handful of buffers, not the neighbour's pages.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

# workers => 1: the server's default, which this file was written against
# (it calls no handler).
my $node = new_node('instance_plans', workers => 1, conf => 'autovacuum = off');
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION recoverable_msg;
SELECT rmsg.create_instance('empty'), rmsg.create_instance('full');
SELECT count(*) FROM generate_series(1, 20000) g,
       LATERAL rmsg.deliver('full', convert_to(lpad(g::text, 100, 'x'), 'UTF8')) d;
VACUUM ANALYZE rmsg.instance_message;
});

# Runs the statement in a session of its own (so its plans are made with
# the statistics above) with auto_explain on; returns the plans of the
# statements the function ran on rmsg.instance_message (not the outer
# statement's, whose buffers include the catalog reads of a new session).
sub plans_of
{
	my ($sql) = @_;
	my $offset = -s $node->logfile;
	$node->safe_psql(
		'postgres', qq{
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
$sql;
});
	my $log = slurp_file($node->logfile, $offset);
	my @plans = grep { /instance_message/ } split /^.*duration: .*plan:\n/m, $log;
	return join "\n", @plans;
}

# The largest 'shared hit' count of any plan node: a whole statement's at most.
sub max_buffers
{
	my ($plans) = @_;
	my $max = 0;
	while ($plans =~ /shared hit=(\d+)/g) { $max = $1 if $1 > $max; }
	return $max;
}

my $plans = plans_of("SELECT count(*) FROM rmsg.receive('empty', 1)");
like($plans, qr/instance_message_line_idx/, 'receive on an empty instance uses the line index');
unlike($plans, qr/Index Scan using instance_message_pkey on instance_message\s+\(.*\n\s*Filter: .*instance_id/,
	'... never the primary key with instance_id as a filter');
unlike($plans, qr/Rows Removed by Filter: [0-9]{3,}/, '... and filters out no other instance\'s rows');
cmp_ok(max_buffers($plans), '<', 50, '... reading a handful of buffers, not the neighbour\'s pages');

$plans = plans_of("SELECT count(*) FROM rmsg.receive('full', 100)");
like($plans, qr/Index Cond: \(msg_id = ANY/, 'a batch is leased by msg_id through the primary key');
unlike($plans, qr/Rows Removed by Filter: [0-9]{3,}/, '... after finding it in the line index');
# walking the neighbour's 20,000 rows would cost 20,000 heap fetches alone
cmp_ok(max_buffers($plans), '<', 2000, '... with buffers for 100 messages, not 20,000');
is($node->safe_psql('postgres', q{SELECT in_flight FROM rmsg.instances WHERE instance = 'full'}),
	'100', 'the batch of 100 is in flight');

# In recovery, the recovery messages are reached through their partial
# index, without walking past the 19,900 deferred ones.  (The VACUUM takes
# the acked batch's dead entries out of the head of the line, which the
# check for messages in flight would otherwise step over once.)
$node->safe_psql(
	'postgres', q{
SELECT rmsg.ack(array_agg(m.msg_id)) FROM rmsg.instance_message m WHERE m.lease_until > now();
SELECT rmsg.begin_recovery('full');
SELECT count(*) FROM rmsg.deliver('full', 'r', 'recovery');
});
$node->safe_psql('postgres', 'VACUUM (INDEX_CLEANUP on) rmsg.instance_message');
$plans = plans_of("SELECT count(*) FROM rmsg.receive('full', 1)");
like($plans, qr/instance_message_recovery_idx/, 'in recovery, receive uses the recovery index');
unlike($plans, qr/Rows Removed by Filter: [0-9]{3,}/, '... and steps over no deferred message');
cmp_ok(max_buffers($plans), '<', 50, '... reading a handful of buffers');
is($node->safe_psql('postgres', q{SELECT in_flight || ',' || deferred FROM rmsg.instances WHERE instance = 'full'}),
	'1,19900', 'the recovery message is in flight, 19,900 deferred');

$node->stop;
done_testing();
