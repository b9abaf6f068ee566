use strict;
use warnings FATAL => 'all';

# A remote queue under a held horizon (worker/transfer.c, queue/ready_scan.c).
# The worker numbers a remote queue's messages 100 at a time, reading its
# lane of the ready index.  The messages it moved leave index entries that
# VACUUM may not remove while a transaction holds the horizon; numbering from
# the front of the lane read all of them again for every batch, so a backlog
# drained in time growing with its square.  Numbering now starts at the
# queue's ready hint, which the worker moves over the entries it moved.
# Two servers: sender A, receiver C.  A's remote queue to_h goes to C's in_h.
#  1. With an xid held on A, 3000 messages in one commit cross in batches
#     of 100, reading about two index entries each (6,059 here; from the
#     front of the lane, every batch read all the entries before it again:
#     55,529, growing with the square of the backlog), and arrive in order.
#  2. A put whose transaction is still open when later puts cross (its key
#     is older than theirs) is not left behind the hint: it arrives once it
#     commits.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

use constant BACKLOG => 3000;

my $conf = "rmsg.database = 'postgres'\nrmsg.worker_naptime = 60000\nautovacuum = off";
my $node_a = new_node('sender_a', workers => 1, extension => 1, conf => $conf);
my $node_c = new_node('receiver_c', workers => 1, extension => 1, conf => $conf);

my $os_user = getpwuid($<);
my ($c_host, $c_port) = ($node_c->host, $node_c->port);
$node_c->safe_psql('postgres', q{SELECT rmsg.create_queue('in_h')});
$node_a->safe_psql('postgres', qq{
CREATE EXTENSION postgres_fdw;
CREATE SERVER c FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (host '$c_host', port '$c_port', dbname 'postgres');
CREATE USER MAPPING FOR CURRENT_USER SERVER c OPTIONS (user '$os_user');
SELECT rmsg.create_remote_queue('to_h', 'c', 'in_h');
});

# waits until nothing of to_h is pending or in transit
sub drained
{
	my ($what) = @_;
	ok( $node_a->poll_query_until('postgres', q{
SELECT pending = 0 AND in_transit = 0 FROM rmsg.channels WHERE queue = 'to_h'}),
		"$what: everything reached C and was acknowledged");
}

# Index entries of A's ready index returned to scans so far.  The worker
# sends its statistics when a pass finds nothing to do; once the queue is
# drained, two reads a naptime apart that agree mean it has.
sub ready_index_reads
{
	my $query = q{
SET stats_fetch_consistency = none;
SELECT pg_stat_force_next_flush();
SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'message_ready_idx';
};
	my ($last, $now) = (-1, $node_a->safe_psql('postgres', $query));
	for (my $i = 0; $i < 50 && $now != $last; $i++)
	{
		select(undef, undef, undef, 0.5);
		($last, $now) = ($now, $node_a->safe_psql('postgres', $query));
	}
	return $now;
}

# what C's in_h holds, in the order it arrived
sub received
{
	return $node_c->safe_psql('postgres', q{
SELECT coalesce(string_agg(convert_from(m.inline_data, 'UTF8'), ',' ORDER BY m.msg_id), '')
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'in_h'});
}

# The worker's naptime is long: its maintenance sweep, which reads the
# ready index too (at most 50,000 entries a pass), runs once a naptime, and
# the figure above counts the numbering alone.  Puts wake the worker.

# Warm up: the channel exists and the worker has read the queue once.
$node_a->safe_psql('postgres', q{SELECT rmsg.put('to_h', 'warm'::text)});
drained('warm-up');

#---------------------------------------------------------------------------
# 1. A backlog crosses under a held horizon
#---------------------------------------------------------------------------

my $holder = session_open($node_a, 'holder');
session_query($holder, q{BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT txid_current() > 0;}, 'the horizon holder starts');

my $before = ready_index_reads();
$node_a->safe_psql('postgres', qq{
SELECT count(*) FROM rmsg.put_batch('to_h',
  (SELECT array_agg(convert_to('m' || i, 'UTF8') ORDER BY i) FROM generate_series(1, ${\ BACKLOG }) i));
});
# Waits on C: rmsg.channels on A counts pending messages along the same
# index, and would add its own reads to the figure.
ok( $node_c->poll_query_until('postgres', qq{
SELECT count(*) = ${\ (BACKLOG + 1) } FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'in_h'}),
	'the backlog reached C');
my $reads = ready_index_reads() - $before;
drained('the backlog under a held horizon');
note("ready index entries read to number " . BACKLOG . " messages: $reads");
cmp_ok($reads, '<', 3 * BACKLOG,
	'numbering reads a few index entries per message, not the whole front again per batch');
is(received(), join(',', 'warm', map { "m$_" } 1 .. BACKLOG),
	'every message arrived once, in the order put');

my ($vacuum_out, $vacuum_err) = ('', '');
$node_a->psql('postgres', 'VACUUM (VERBOSE) rmsg.message',
	stdout => \$vacuum_out, stderr => \$vacuum_err);
my ($kept) = $vacuum_err =~ /(\d+) are dead but not yet removable/;
cmp_ok($kept // 0, '>=', BACKLOG,
	'the horizon was held: the moved messages are still dead but not removable');

#---------------------------------------------------------------------------
# 2. A put that commits after later ones crossed
#---------------------------------------------------------------------------

my $slow = session_open($node_a, 'slow_put');
session_query($slow, q{BEGIN;
SELECT rmsg.put('to_h', 'slow'::text) > 0;}, 'a put in a transaction left open');
$node_a->safe_psql('postgres', q{
SELECT rmsg.put('to_h', 'after1'::text);
SELECT rmsg.put('to_h', 'after2'::text);
});
ok( $node_c->poll_query_until('postgres', q{
SELECT count(*) = 2 FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
 WHERE q.name = 'in_h' AND convert_from(m.inline_data, 'UTF8') LIKE 'after_'}),
	'the later puts cross while the first is uncommitted');
session_query($slow, 'COMMIT;', 'the slow put commits');
drained('the slow put');
like(received(), qr/,after1,after2,slow$/,
	'the slow put arrives after them, once: the hint did not pass it');

session_query($holder, 'COMMIT;', 'the horizon is released');
$node_a->stop;
$node_c->stop;
done_testing();
