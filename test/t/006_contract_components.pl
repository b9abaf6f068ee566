use strict;
use warnings FATAL => 'all';

# The called-component table of the committed interaction contract is
# bounded by rmsg.max_components.  When it is full, an entry whose replies
# are all stable is evicted; when none is, the WAL is forced once, which
# makes them all stable, and the oldest goes.  Forgetting a stable entry is
# safe: calling its callee again needs no force.  Entries whose
# transactions are still recording replies are never evicted; when all are
# such, the call fails with 53400 and changes nothing.
#
# wal_writer_delay is at its maximum so that lazily committed replies stay
# unflushed until something forces the WAL.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

# workers => 1: the server's default, which this file was written against
# (it calls no handler).
my $node = new_node(
	'components',
	workers   => 1,
	extension => 1,
	conf      => q{
rmsg.max_components = 16
wal_writer_delay = '10s'
});

sub forces
{
	return $node->safe_psql('postgres', 'SELECT forces FROM rmsg.log_stats');
}

sub entries
{
	return $node->safe_psql('postgres',
		'SELECT count(*) FROM rmsg.called_components');
}

# One call from caller $c to callee 'svc', its reply recorded (lazily).
sub call_once
{
	my ($c) = @_;
	my $out = $node->safe_psql(
		'postgres', qq(
SELECT forced FROM rmsg.prepare_call('$c', 'svc');
SELECT rmsg.record_reply('$c', (SELECT max(call_id) FROM rmsg.call_log WHERE caller = '$c'), 'ok');
));
	return (split /\n/, $out)[0];
}

# The WAL writer's first flush after start comes whenever it is first woken;
# after that it flushes at most every wal_writer_delay (10s).  Wake it with
# a few pages of lazily committed WAL and give it a moment, so that the
# steps below (well under 10s) run with nothing flushing but our forces.
$node->safe_psql('postgres', q(
SET synchronous_commit = off;
CREATE TABLE warm AS SELECT g FROM generate_series(1, 5000) g;
SELECT pg_sleep(1);
));

# The callers exist before the measurements: the transaction that makes a
# caller's row commits flushed, which would make the earlier replies stable.
$node->safe_psql('postgres', q{
SELECT rmsg.restart(c) FROM unnest(ARRAY['c17', 'd1', 'd2', 'd3']
       || ARRAY(SELECT 'c' || i FROM generate_series(1, 16) i)
       || ARRAY(SELECT 'p' || i FROM generate_series(1, 16) i)) c;
});

# Fill the table: 16 callers, each with a reply that is not yet flushed.
# Nothing forces: every call is a first call.
$node->safe_psql('postgres', 'SELECT rmsg.force_log(\'setup\')');
my $forces0 = forces();
my @forced = map { call_once("c$_") } 1 .. 16;
is(join(',', @forced), join(',', ('f') x 16), 'first calls of 16 callers do not force');
is(entries(), 16, 'the table holds 16 entries');
is(forces(), $forces0, 'no force while filling the table');
my $unstable = $node->safe_psql('postgres',
	'SELECT count(*) FROM rmsg.called_components WHERE NOT stable');
is($unstable, 16, 'all 16 replies are still unflushed');

# A 17th caller: no entry may be forgotten until the WAL is forced once.
is(call_once('c17'), 'f', 'the 17th caller\'s call itself does not force');
is(forces(), $forces0 + 1, 'a full table of unstable entries costs one force');
is(entries(), 16, 'still 16 entries: one was evicted');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM rmsg.called_components WHERE caller = 'c17'"),
	1, 'the new caller has its entry');

# Now most entries are stable; the next new callers evict without forcing.
my $forces1 = forces();
call_once("d$_") for 1 .. 3;
is(forces(), $forces1, 'stable entries are evicted without a force');
is(entries(), 16, 'the table stays at 16 entries');

# An evicted caller calls its callee again: its reply was made stable by
# the force, so no force is needed, and the call proceeds normally.
my $evicted = $node->safe_psql('postgres', q(
SELECT string_agg(c, ',' ORDER BY c) FROM (SELECT 'c' || i AS c FROM generate_series(1, 16) i) x
 WHERE c NOT IN (SELECT caller FROM rmsg.called_components)));
ok($evicted ne '', "some first callers were evicted ($evicted)");
my $victim = (split /,/, $evicted)[0];
is(call_once($victim), 'f', 'calling again after eviction needs no force');

# Entries of open transactions stay: one transaction records replies for
# 16 new pairs (all pending), then a 17th pair cannot get an entry.
my $sql = "BEGIN;\n";
for my $i (1 .. 16)
{
	$sql .= "SELECT call_id FROM rmsg.prepare_call('p$i', 'svc');\n";
}
$sql .= "COMMIT;\nBEGIN;\n";
for my $i (1 .. 16)
{
	$sql .= "SELECT rmsg.record_reply('p$i', 1, 'ok');\n";
}
$sql .= "SELECT rmsg.prepare_call('p17', 'svc');\nCOMMIT;\n";
my ($ret, $out, $err) = $node->psql('postgres', $sql,
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/53400/, 'a table full of pending entries refuses a new pair with 53400');
like($err, qr/rmsg\.max_components/, 'the error names the setting');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM rmsg.call_log WHERE caller LIKE 'p%' AND reply IS NOT NULL"),
	0, 'the failed transaction recorded nothing');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM rmsg.caller WHERE caller = 'p17'"),
	0, 'and made no caller');

# Once that transaction is gone, the entries can be evicted again.
is(call_once('p17'), 'f', 'after the rollback a new pair gets an entry');
is(entries(), 16, 'the table stays at 16 entries');

# force_log with the WAL insert position exactly at a page boundary, where
# it points past the next page's header: the flush must stop at the
# boundary, not ask for WAL that does not exist yet (an error then).
my $boundary = $node->safe_psql('postgres', q{
DO $$
DECLARE
    room int;
BEGIN
    FOR tries IN 1 .. 50 LOOP
        room := 8192 - ((pg_current_wal_insert_lsn() - '0/0')::numeric % 8192)::int;
        IF room < 400 THEN
            PERFORM pg_logical_emit_message(false, 'pad', repeat('a', 300));
            CONTINUE;
        END IF;
        -- record header 24, data header 5, message header 24, prefix 4
        PERFORM pg_logical_emit_message(false, 'pad', repeat('a', room - 57));
        IF (pg_current_wal_insert_lsn() - '0/0')::numeric % 8192 = 24 THEN
            PERFORM rmsg.force_log('edge');
            RAISE NOTICE 'at boundary';
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'the WAL never reached a page boundary here';
END $$;
SELECT pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() - 24;
});
is($boundary, 't', 'force_log at a WAL page boundary flushes up to it');

$node->stop;
done_testing();
