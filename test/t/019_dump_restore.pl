use strict;
use warnings FATAL => 'all';

# pg_dump and pg_restore keep the extension's whole state.  Its tables and
# sequences are registered with pg_extension_config_dump, so a dump of a
# database carries their rows and the sequences' positions along with the
# CREATE EXTENSION.  This file fills a database with every kind of state
# the extension keeps, dumps it in custom format (restored with pg_restore
# into a fresh cluster) and in plain format (restored with psql into a
# second database of that cluster), and checks:
#  1. the dumps and restores succeed and print nothing;
#  2. every table of schema rmsg holds exactly the rows it held, every
#     sequence stands where it stood, the extension's objects and their
#     grants are the same, every view shows the same (leaving out what is
#     counted in shared memory since the server started, or depends on the
#     clock), and each role holds the same privileges.  The tables,
#     sequences and views are read from the catalog, not listed here, so a
#     table added later is compared too; and the source must have rows in
#     every table, so that no comparison is of two empty tables;
#  3. the restored state works: new queues, instances, messages and payload
#     rows get ids past the restored ones (no 23505); the ready messages
#     come out of get in their order, the leased ones only once their lease
#     ends or their receipt (made on the source) ends it, the delayed one
#     not yet; dead messages and dead letters are there; shared payload rows
#     are still shared, and data tokens and content dedup find them again;
#     the instance in recovery hands out only its recovery message, and
#     completing recovery releases the deferred ones in order; the caller
#     must restart (a new server) and then replays from its log, and the
#     callee answers a kept call as a duplicate; the grants act; the
#     restored handlers run once a worker serves the database.
# The roles are made on the target in another order than on the source, so
# they have other OIDs there: a restore keeps names, not OIDs, and nothing
# the extension keeps may depend on a role's OID.
#
# Three dumps: custom, plain, and plain with --inserts (one INSERT per row,
# checked at once, in the order of the table's rows).  The last would fail
# if a foreign key ran from rmsg.queue to itself (a queue's dead-letter
# queue, whose row may come after the queue's): there is none, and pg_dump
# has no circular reference to warn of.  Content dedup keys its payload rows
# by the owner's name, which a restore keeps, not by the owner's OID, which
# it changes.

use Digest::MD5 qw(md5_hex);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

# No background worker on either cluster until the last part: its
# maintenance (dead-lettering, collecting payloads) and the handlers would
# change the state while it is being compared.
my $conf = q{
max_prepared_transactions = 10
};
my $source = new_node('source', conf => $conf);

sub sql
{
	my ($node, $db, $query) = @_;
	return $node->safe_psql($db, $query);
}

# The SQLSTATE of the error a query raises, or 'no error'.
sub sqlstate_of
{
	my ($node, $db, $query) = @_;
	my ($rc, $out, $err) = $node->psql($db, $query,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return 'no error' if $rc == 0;
	return $1 if $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return "failed without an SQLSTATE: $err";
}

# The payloads, big enough (over rmsg.inline_payload_max, 2000 bytes) to
# live in payload rows of their own that messages share: a text repeated.
my %unit = (
	token   => [ 'token data ',   300 ],
	many    => [ 'many data ',    300 ],
	content => [ 'content data ', 300 ],
	dead    => [ 'dead data ',    300 ],
	orphan  => [ 'orphan ',       500 ]);
my %data = map { $_ => $unit{$_}[0] x $unit{$_}[1] } keys %unit;
# An SQL expression for the bytes of $data{$name}.
sub bytes_sql
{
	my ($name) = @_;
	return "convert_to(repeat('$unit{$name}[0]', $unit{$name}[1]), 'UTF8')";
}
# What a get's md5(payload) || ':' || length(payload) says of $data{$name}.
sub descr { my ($name) = @_; return md5_hex($data{$name}) . ':' . length($data{$name}); }

#---------------------------------------------------------------------------
# 1. The source: roles, and a database with every kind of state
#---------------------------------------------------------------------------

# alice owns almost everything; bob and carol are granted some of it.
sql($source, 'postgres', q{
	CREATE ROLE alice; CREATE ROLE bob; CREATE ROLE carol;
	CREATE DATABASE app;
});
sql($source, 'app', q{
	CREATE EXTENSION recoverable_msg;
	GRANT USAGE ON SCHEMA rmsg TO alice, bob, carol;
	GRANT EXECUTE ON FUNCTION rmsg.create_queue(text, int, text, text, interval),
	                          rmsg.create_instance(text, jsonb) TO alice;
	GRANT CREATE ON SCHEMA public TO alice;
});

# Queues, and messages in every state a queue message can be in.
sql($source, 'app', q{
	SET ROLE alice;
	-- what the handlers write, once a worker runs them (part 5)
	CREATE TABLE public.handled (target text, payload text, by_role name);
	CREATE FUNCTION public.q_handler(p bytea) RETURNS void LANGUAGE sql
	  AS $$ INSERT INTO public.handled VALUES ('work', convert_from(p, 'UTF8'), current_user) $$;
	CREATE FUNCTION public.i_handler(i text, p bytea) RETURNS void LANGUAGE sql
	  AS $$ INSERT INTO public.handled VALUES (i, convert_from(p, 'UTF8'), current_user) $$;

	SELECT rmsg.create_queue('orders_dlq');
	SELECT rmsg.create_queue('orders', max_deliveries => 3, dead_letter_queue => 'orders_dlq');
	SELECT rmsg.create_queue('risky', max_deliveries => 1, dead_letter_queue => 'orders_dlq');
	SELECT rmsg.create_queue('jobs', max_deliveries => 1);      -- no dead-letter queue
	SELECT rmsg.create_queue('fan_a');
	SELECT rmsg.create_queue('fan_b');
	SELECT rmsg.create_queue('fan_c');
	SELECT rmsg.create_queue('docs', dedup => 'content');
	SELECT rmsg.create_queue('audit', dedup => 'none');
	SELECT rmsg.create_queue('scratch');
	SELECT rmsg.create_queue('work');

	-- six ready messages and a delayed one
	SELECT rmsg.put('orders', 'order ' || g, headers => jsonb_build_object('n', g))
	  FROM generate_series(1, 6) g;
	SELECT rmsg.put('orders', 'later'::text, delay => '1 hour');

	-- a message delivered max_deliveries times moves to the dead-letter
	-- queue at the next get (there it starts over with 0 deliveries)
	SELECT rmsg.put('risky', 'poison'::text);
	SELECT count(*) FROM rmsg.get('risky', visibility => '0');
	SELECT count(*) FROM rmsg.get('risky', visibility => '0');

	-- without a dead-letter queue it is kept dead, with its payload
	SELECT rmsg.put('jobs', 'small job'::text);
	SELECT rmsg.put('jobs', } . bytes_sql('dead') . q{) AS dead_msg \gset
	SELECT count(*) FROM rmsg.get('jobs', 2, visibility => '0');
	SELECT count(*) FROM rmsg.get('jobs', visibility => '0');

	-- data shared by a data token, forward and put_many: one payload row,
	-- several messages
	SELECT msg_id AS tok_msg, token AS tok
	  FROM rmsg.put_with_token('fan_a', } . bytes_sql('token') . q{, headers => '{"kind": "token"}') \gset
	SELECT rmsg.put('fan_b', NULL::bytea, data_token => :tok);
	SELECT rmsg.forward(:tok_msg, 'fan_c');
	SELECT count(*) FROM rmsg.put_many(ARRAY['fan_a', 'fan_b', 'fan_c'], } . bytes_sql('many') . q{);
	-- a dead message's payload shared with a live one, and copied
	SELECT rmsg.forward(:dead_msg, 'fan_c');
	SELECT rmsg.forward(:dead_msg, 'audit');
	-- found by content: the second put references the first one's row
	SELECT rmsg.put('docs', } . bytes_sql('content') . q{);
	SELECT rmsg.put('docs', } . bytes_sql('content') . q{);
	-- a payload row no message references any more (collect_payloads's)
	SELECT rmsg.ack(rmsg.put('scratch', } . bytes_sql('orphan') . q{));

	SELECT rmsg.put('work', 'job ' || g) FROM generate_series(1, 2) g;
	-- an idempotent put, whose key a repeat after the restore must find
	SELECT rmsg.put('scratch', 'once'::text, dedup_id => 'order-77');
});

# Two messages leased for an hour, whose receipts the target will use, and
# one leased for three seconds, whose lease runs out during the test.
my @long_leases = map { [ split /\|/ ] } split /\n/, sql($source, 'app', q{
	SET ROLE alice;
	SELECT msg_id, receipt FROM rmsg.get('orders', 2, visibility => '1 hour') ORDER BY msg_id});
my $short_lease = sql($source, 'app', q{
	SET ROLE alice;
	SELECT msg_id FROM rmsg.get('orders', visibility => '3 seconds')});
is(scalar(@long_leases) . ':' . ($short_lease ne '' ? 1 : 0), '2:1',
	'the source has two messages leased for an hour and one for three seconds');

# Instances: one in recovery with deferred normal messages (one from before
# the recovery began) and a recovery message, one with a message in flight,
# one for the instance handler.
is( join(',', grep { $_ ne '' } split /\n/, sql($source, 'app', q{
	SET ROLE alice;
	SELECT rmsg.create_instance('ord-1', '{"status": "new"}');
	SELECT rmsg.create_instance('ord-2', '{"status": "open"}');
	SELECT rmsg.create_instance('auto-1');
	SELECT disposition FROM rmsg.deliver('ord-1', 'placed');
	SELECT rmsg.begin_recovery('ord-1');
	SELECT disposition FROM rmsg.deliver('ord-1', 'address changed', headers => '{"by": "customer"}');
	SELECT disposition FROM rmsg.deliver('ord-1', 'paid');
	SELECT disposition FROM rmsg.deliver('ord-1', 'resync', 'recovery');
	SELECT rmsg.save_state('ord-1', '{"status": "recovering"}');
	SELECT disposition FROM rmsg.deliver('ord-2', 'hello');
	SELECT disposition FROM rmsg.deliver('ord-2', 'again');
	SELECT disposition FROM rmsg.deliver('auto-1', 'for the handler');
})), 'ready,deferred,deferred,ready,ready,ready,ready',
	'ord-1 is in recovery: the normal messages delivered since are deferred');
my ($inst_lease, $inst_receipt) = split /\|/, sql($source, 'app', q{
	SET ROLE alice;
	SELECT msg_id, receipt FROM rmsg.receive('ord-2', visibility => '1 hour')});
ok($inst_receipt, "ord-2 has a message in flight for an hour");

# The contract: the caller 'shop' checkpointed after its first call, then
# called warehouse (reply logged) and billing again (no reply yet); the
# callees kept their last replies.
sql($source, 'app', q{
	SET ROLE alice;
	SELECT rmsg.restart('shop');
	SELECT call_id FROM rmsg.prepare_call('shop', 'billing', 'charge 1');
	BEGIN;
	SELECT status FROM rmsg.accept_call('billing', 'shop', 1, 'charge 1');
	SELECT rmsg.reply('billing', 'shop', 1, 'charged 1');
	COMMIT;
	SELECT rmsg.record_reply('shop', 1, 'charged 1');
	SELECT rmsg.checkpoint('shop', '{"done": 1}');
	SELECT call_id FROM rmsg.prepare_call('shop', 'warehouse', 'reserve 2');
	BEGIN;
	SELECT status FROM rmsg.accept_call('warehouse', 'shop', 2, 'reserve 2');
	SELECT rmsg.reply('warehouse', 'shop', 2, 'reserved 2');
	COMMIT;
	SELECT rmsg.record_reply('shop', 2, 'reserved 2');
	SELECT call_id FROM rmsg.prepare_call('shop', 'billing', 'charge 2');
});

# Grants of each kind, and a queue of the superuser's.
sql($source, 'app', q{
	SET ROLE alice;
	SELECT rmsg.grant_queue('orders', 'bob', 'get');
	SELECT rmsg.grant_queue('fan_a', 'bob', 'put, get');
	SELECT rmsg.grant_queue('docs', 'carol', 'manage');
	SELECT rmsg.grant_instance('ord-1', 'bob', 'receive');
	SELECT rmsg.grant_instance('ord-2', 'carol', 'deliver');
	SELECT rmsg.grant_component('shop', 'bob', 'use');
	-- a grant rewrites the queue's row: orders_dlq's now lies after the
	-- rows of orders and risky, which reference it (see part 2)
	SELECT rmsg.grant_queue('orders_dlq', 'carol', 'get');
	RESET ROLE;
	SELECT rmsg.create_queue('admin');
	SELECT rmsg.put('admin', 'from the superuser'::text);
	SELECT rmsg.grant_queue('admin', 'bob', 'put');
});

# Between servers: a remote queue with a message pending and one in
# transit, and a receiving channel.  No worker runs here, so the transit
# row is written as worker 0 leaves one while its receiver is down.
sql($source, 'app', q{
	CREATE FOREIGN DATA WRAPPER dump_fdw;
	CREATE SERVER elsewhere FOREIGN DATA WRAPPER dump_fdw OPTIONS (host '/nonexistent', dbname 'x');
	CREATE USER MAPPING FOR CURRENT_USER SERVER elsewhere OPTIONS (user 'someone');
	SELECT rmsg.create_remote_queue('outbound', 'elsewhere', 'inbound');
	SELECT rmsg.put('outbound', 'pending'::text);
	INSERT INTO rmsg.transit (queue_id, seq, msg_id, enqueued_at, data)
	SELECT queue_id, 1, nextval('rmsg.msg_id_seq'), now(), 'numbered' FROM rmsg.remote_queue;
	UPDATE rmsg.remote_queue SET next_seq = 2;
	SELECT rmsg.create_queue('inbound');
	SELECT rmsg.accept_transfer('sender:1:1', 'inbound', 1, ARRAY['arrived']::bytea[], NULL);
	-- what the two sides remember of payloads sent by key: caches, not dumped
	SELECT rmsg.accept_transfer('sender:1:2', 'inbound', 1, ARRAY[repeat('k', 300)::bytea],
	                            NULL, ARRAY[7], 'sender:1:1');
	INSERT INTO rmsg.payload_sent SELECT max(payload_id), 'elsewhere', 10 FROM rmsg.payload;
	INSERT INTO rmsg.payload_key SELECT max(payload_id), 12345 FROM rmsg.payload;
	CREATE FUNCTION public.answer(caller text, call_id bigint, request bytea) RETURNS bytea
	  LANGUAGE sql AS $$ SELECT request $$;
	SELECT rmsg.set_callee_handler('desk', 'public.answer(text,bigint,bytea)');
});

# Handlers.  No worker runs (rmsg.worker_count = 0), and the functions say
# so; the registrations stand.
my ($rc, $out, $err) = $source->psql('app', q{
	SET ROLE alice;
	SELECT rmsg.subscribe('work', 'public.q_handler(bytea)');
	SELECT rmsg.set_handler('auto-', 'public.i_handler(text, bytea)');
});
is($rc, 0, 'subscribe and set_handler succeed without a worker');
my @warnings = $err =~ /WARNING:  no background worker runs to call this handler/g;
is(scalar(@warnings), 2, 'and each warns that no worker will call its handler');

# A put prepared but not committed when pg_dump runs: it is not in the dump.
sql($source, 'app', q{
	BEGIN;
	SELECT rmsg.put('orders', 'prepared, never committed'::text);
	PREPARE TRANSACTION 'pending_put';
});
is(sql($source, 'postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '1',
	'a prepared transaction holds a put');

#---------------------------------------------------------------------------
# 2. Dump, and restore into a fresh cluster
#---------------------------------------------------------------------------

# Runs a client program (pg_dump, pg_restore, psql: the PostgreSQL 15 ones
# on PATH); returns its exit status, stdout and stderr.
sub run_tool
{
	my @cmd = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

my $dir = PostgreSQL::Test::Utils::tempdir;
my %dump = (custom => "$dir/app.dump", plain => "$dir/app.sql", inserts => "$dir/app_inserts.sql");
my %dump_options = (custom => ['-Fc'], plain => ['-Fp'], inserts => [ '-Fp', '--inserts' ]);
for my $format (qw(custom plain inserts))
{
	my ($rc, $out, $err) = run_tool('pg_dump', @{ $dump_options{$format} }, '-f', $dump{$format},
		'-d', $source->connstr('app'));
	is($rc, 0, "pg_dump ($format) succeeds");
	is($err, '', "pg_dump ($format) prints no message (no circular foreign key, say)");
}

my $target = new_node('target', conf => $conf);
# The roles first, as pg_dumpall --roles-only would bring them, but in
# another order and after one more: same names, other OIDs.
sql($target, 'postgres', q{
	CREATE ROLE someone_else; CREATE ROLE carol; CREATE ROLE bob; CREATE ROLE alice;
});
my $oids_sql = q{SELECT string_agg(rolname || '=' || oid, ',' ORDER BY rolname) FROM pg_roles
	WHERE rolname IN ('alice', 'bob', 'carol')};
isnt(sql($target, 'postgres', $oids_sql), sql($source, 'postgres', $oids_sql),
	'the roles have other OIDs on the target than on the source');

# Custom format: pg_restore makes database app and fills it.
my ($rc_restore, $out_restore, $err_restore) = run_tool('pg_restore', '--exit-on-error', '-C',
	'-d', $target->connstr('postgres'), $dump{custom});
is("$rc_restore|$err_restore", '0|', 'pg_restore of the custom dump succeeds without a message');

# Plain format: psql runs the script in a new database (it prints what the
# script's SELECTs return, such as setval's, so only stderr must be empty).
sub restore_plain
{
	my ($format, $db) = @_;
	sql($target, 'postgres', "CREATE DATABASE $db");
	my ($rc, $out, $err) = run_tool('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
		'-d', $target->connstr($db), '-f', $dump{$format});
	return "$rc|$err";
}
is(restore_plain('plain', 'app_plain'), '0|', 'psql runs the plain dump without an error or a warning');

my @copies = ([ 'custom', 'app' ], [ 'plain', 'app_plain' ]);

# With --inserts, each row is an INSERT of its own, in the order of the
# table's rows: orders_dlq's row comes after the row of a queue that sends
# its dead letters there.
is(restore_plain('inserts', 'app_inserts'), '0|', 'psql runs the --inserts dump without an error');
push @copies, [ 'inserts', 'app_inserts' ];

#---------------------------------------------------------------------------
# 3. The restored databases hold what the source held
#---------------------------------------------------------------------------

# The relations of schema rmsg of a kind ('r' tables, 'S' sequences, 'v'
# views), from the catalog.
sub relations_of
{
	my ($node, $db, $kind) = @_;
	return split /\n/, sql($node, $db, qq{
		SELECT relname FROM pg_class
		 WHERE relnamespace = 'rmsg'::regnamespace AND relkind = '$kind' ORDER BY 1});
}

# A table's rows as text, in one canonical order: their count and md5.
# regrole, regprocedure and aclitem columns read as names, so equal text
# means the same roles and functions on both sides.
sub table_fingerprint
{
	my ($node, $db, $table) = @_;
	return sql($node, $db, qq{
		SELECT count(*) || ' rows, md5 ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
		  FROM rmsg.$table t});
}

# On a difference, say which rows differ (their first 200 characters).
sub diag_rows
{
	my ($db, $table) = @_;
	my $q = "SELECT left(t::text, 200) FROM rmsg.$table t ORDER BY t::text";
	my %src = map { $_ => 1 } split /\n/, sql($source, 'app', $q);
	my %tgt = map { $_ => 1 } split /\n/, sql($target, $db, $q);
	diag("only on the source: $_") for grep { !$tgt{$_} } sort keys %src;
	diag("only in $db: $_") for grep { !$src{$_} } sort keys %tgt;
	return;
}

my @tables = relations_of($source, 'app', 'r');
my @sequences = relations_of($source, 'app', 'S');
my %source_rows;
# What the remote side remembers of payloads sent by key holds role OIDs,
# which name other roles, or none, in another cluster, and random keys: it
# is not dumped, and a restored database sends the data again, under new
# keys.
my %not_dumped = map { $_ => 1 } qw(payload_key payload_received payload_sent);
for my $t (@tables)
{
	$source_rows{$t} = table_fingerprint($source, 'app', $t);
	unlike($source_rows{$t}, qr/^0 rows/, "the source has rows in rmsg.$t");
}
ok(@tables >= 12, 'the tables compared: ' . join(', ', @tables));
for my $s (@sequences)
{
	is(sql($source, 'app', "SELECT is_called FROM rmsg.$s"), 't', "the source has drawn from rmsg.$s");
}
ok(@sequences >= 4, 'the sequences compared: ' . join(', ', @sequences));

# Each role's privileges on every queue, instance and component.
my $privileges_sql = q{
	SELECT string_agg(line, E'\n' ORDER BY line) FROM (
	  SELECT r || ' queue ' || q.name || ' ' || p || '=' || rmsg.has_queue_privilege(r::regrole, q.name, p)
	    FROM unnest(ARRAY['alice', 'bob', 'carol']) r, rmsg.queue q, unnest(ARRAY['put', 'get', 'manage']) p
	  UNION ALL
	  SELECT r || ' instance ' || i.name || ' ' || p || '=' || rmsg.has_instance_privilege(r::regrole, i.name, p)
	    FROM unnest(ARRAY['alice', 'bob', 'carol']) r, rmsg.instance i,
	         unnest(ARRAY['deliver', 'receive', 'manage']) p
	  UNION ALL
	  SELECT r || ' component ' || c.name || ' ' || p || '=' || rmsg.has_component_privilege(r::regrole, c.name, p)
	    FROM unnest(ARRAY['alice', 'bob', 'carol']) r, rmsg.component c, unnest(ARRAY['use', 'manage']) p
	) x(line)};
my $source_privileges = sql($source, 'app', $privileges_sql);
is( join(',', grep { /^(bob|carol) .*=true$/ } split /\n/, $source_privileges),
	join(',',
		'bob component shop use=true',
		'bob instance ord-1 receive=true',
		'bob queue admin put=true',
		'bob queue fan_a get=true',
		'bob queue fan_a put=true',
		'bob queue orders get=true',
		'carol instance ord-2 deliver=true',
		'carol queue docs manage=true',
		'carol queue orders_dlq get=true'),
	'on the source bob and carol hold exactly what they were granted');

my $describe = slurp_file("$FindBin::RealBin/../lib/describe_extension.sql");
my $source_described = sql($source, 'app', $describe);

for my $copy (@copies)
{
	my ($format, $db) = @$copy;
	is(join(',', relations_of($target, $db, 'r')), join(',', @tables),
		"$format: the restored database has the same tables in rmsg");
	for my $t (@tables)
	{
		if ($not_dumped{$t})
		{
			like(table_fingerprint($target, $db, $t), qr/^0 rows/, "$format: rmsg.$t is not carried over");
			next;
		}
		is(table_fingerprint($target, $db, $t), $source_rows{$t},
			"$format: rmsg.$t holds the same rows") or diag_rows($db, $t);
	}
	is(join(',', relations_of($target, $db, 'S')), join(',', @sequences),
		"$format: the same sequences");
	for my $s (@sequences)
	{
		my $q = "SELECT last_value || ' ' || is_called FROM rmsg.$s";
		is(sql($target, $db, $q), sql($source, 'app', $q), "$format: rmsg.$s stands where it stood");
	}
	is(sql($target, $db, $describe), $source_described,
		"$format: the extension's functions, tables, grants and comments are the same");
	is(sql($target, $db, $privileges_sql), $source_privileges,
		"$format: every role holds the same privileges on every queue, instance and component");
	is( sql($target, $db, q{SELECT count(*) FROM rmsg.message
		WHERE convert_from(inline_data, 'UTF8') = 'prepared, never committed'}),
		'0', "$format: the put that was only prepared is not there");
}

# The payload rows shared by several messages (live or dead), with their
# reference counts: the same sharing on both sides, and real sharing.
my $sharing_sql = q{
	SELECT string_agg(payload_id || 'x' || n, ',' ORDER BY payload_id) FROM (
	  SELECT payload_id, count(*) AS n FROM (
	    SELECT payload_id FROM rmsg.message UNION ALL SELECT payload_id FROM rmsg.dead_message) r
	   WHERE payload_id IS NOT NULL GROUP BY payload_id HAVING count(*) > 1) s};
my $source_sharing = sql($source, 'app', $sharing_sql);
my @shared = split /,/, $source_sharing;
is(scalar(@shared), 4, "the source has four shared payload rows ($source_sharing): "
	  . 'by token and forward, put_many, forward of a dead message, content');
is(sql($target, $_->[1], $sharing_sql), $source_sharing,
	"$_->[0]: the same payload rows are shared by the same number of messages") for @copies;

# The views.  Left out: what is counted in shared memory since the server
# started (the called-component table, the worker slots, the log and queue
# counters), and ages measured from now().  What remains is compared in
# full, once the three-second lease has run out on both sides (the views
# count ready and in-flight messages as of now()).
my %not_compared = (
	called_components => [ '*' ],
	worker            => [ '*' ],
	log_stats         => [ qw(forces forces_avoided payload_bytes_written payload_bytes_referenced
	                          puts_written puts_referenced payloads_collected stats_since stale_receipts) ],
	queues            => [ qw(oldest_ready_age bytes_written bytes_referenced stale_receipts
	                          puts acks dead_lettered) ],
	instances         => [ qw(oldest_age) ],
	channels          => [ qw(lag) ]);
my @views = relations_of($source, 'app', 'v');
ok(@views >= 9, 'the views: ' . join(', ', @views));

ok( $source->poll_query_until('app', qq{
	SELECT lease_until < now() FROM rmsg.lease WHERE msg_id = $short_lease}),
	'the three-second lease has run out');

# A query for a view's rows as text, one per line in a canonical order,
# without the columns left out above.
sub view_sql
{
	my ($node, $db, $view) = @_;
	my $skip = $not_compared{$view} // [];
	my $columns = sql($node, $db, qq{
		SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
		 WHERE attrelid = 'rmsg.$view'::regclass AND attnum > 0
		   AND attname <> ALL (ARRAY['} . join("','", @$skip) . q{']::name[])});
	return "SELECT string_agg(r::text, E'\\n' ORDER BY r::text) FROM (SELECT $columns FROM rmsg.$view) r";
}

for my $view (@views)
{
	next if ($not_compared{$view} // [''])->[0] eq '*';
	my $want = sql($source, 'app', view_sql($source, 'app', $view));
	isnt($want, '', "the source's rmsg.$view has rows");
	is(sql($target, $_->[1], view_sql($target, $_->[1], $view)), $want,
		"$_->[0]: rmsg.$view shows the same") for @copies;
}
is( sql($source, 'app', q{SELECT ready || ':' || in_flight || ':' || delayed || ':' || dead
	                        FROM rmsg.queues WHERE queue = 'orders'}),
	'4:2:1:0', 'on the source, orders counts 4 ready, 2 in flight, 1 delayed');
is( sql($source, 'app', q{SELECT mode || ':' || ready || ':' || deferred || ':' || in_flight
	                        FROM rmsg.instances WHERE instance = 'ord-1'}),
	'recovery:1:3:0', 'and ord-1 recovers, with its recovery message ready and 3 deferred');

# What a role sees of the views depends on its privileges: the same rows.
for my $role (qw(bob carol))
{
	my $q = qq{SET ROLE $role;
		SELECT (SELECT string_agg(queue, ',' ORDER BY queue) FROM rmsg.queues) || ' / '
		    || (SELECT string_agg(instance, ',' ORDER BY instance) FROM rmsg.instances) || ' / '
		    || coalesce((SELECT string_agg(caller, ',') FROM rmsg.callers), '-')};
	my $want = sql($source, 'app', $q);
	is(sql($target, $_->[1], $q), $want, "$_->[0]: $role sees the same queues, instances, callers ($want)")
	  for @copies;
}

#---------------------------------------------------------------------------
# 4. The restored state works (custom format; ids also on the plain one)
#---------------------------------------------------------------------------

sub app { my ($q) = @_; return sql($target, 'app', $q); }

# The one unreferenced payload row is collected; the shared ones stay.
is(app('SELECT rmsg.collect_payloads()'), '1', 'collect_payloads removes just the unreferenced payload row');

# New ids continue past the restored ones: no 23505.
for my $copy (@copies)
{
	my ($format, $db) = @$copy;
	my $max = sql($target, $db, q{
		SELECT coalesce((SELECT max(queue_id) FROM rmsg.queue), 0)
		    || ' ' || coalesce((SELECT max(instance_id) FROM rmsg.instance), 0)
		    || ' ' || coalesce(greatest((SELECT max(msg_id) FROM rmsg.message),
		                                (SELECT max(msg_id) FROM rmsg.dead_message),
		                                (SELECT max(msg_id) FROM rmsg.instance_message)), 0)
		    || ' ' || coalesce((SELECT max(payload_id) FROM rmsg.payload), 0)});
	my ($max_queue, $max_instance, $max_msg, $max_payload) = split / /, $max;
	is(sqlstate_of($target, $db, q{SET ROLE alice; SELECT rmsg.create_queue('after_restore')}),
		'no error', "$format: create_queue succeeds");
	is(sqlstate_of($target, $db, q{SET ROLE alice; SELECT rmsg.create_instance('after-1')}),
		'no error', "$format: create_instance succeeds");
	ok(sql($target, $db, "SELECT queue_id > $max_queue FROM rmsg.queue WHERE name = 'after_restore'") eq 't'
		  && sql($target, $db, "SELECT instance_id > $max_instance FROM rmsg.instance WHERE name = 'after-1'") eq 't',
		"$format: the new queue and instance have ids past the restored ones");
	is( sql($target, $db, qq{
		SELECT rmsg.put('after_restore', } . bytes_sql('many') . qq{) > $max_msg;
		SELECT max(payload_id) > $max_payload FROM rmsg.payload}),
		"t\nt", "$format: a put gets a msg_id past the restored ones, and its payload row a new id");
}

# The ready messages come out in their order: first the one whose short
# lease ran out (at its old place, delivered twice now), then the others;
# not the two leased for an hour, nor the delayed one.  bob was granted get.
is( app(q{SET ROLE bob;
	SELECT string_agg(convert_from(payload, 'UTF8') || ' ' || headers::text || ' ' || deliveries, ',' ORDER BY msg_id)
	  FROM rmsg.get('orders', 10, visibility => '1 minute')}),
	'order 3 {"n": 3} 2,order 4 {"n": 4} 1,order 5 {"n": 5} 1,order 6 {"n": 6} 1',
	'get returns the ready messages, and the one whose lease ran out, in order');

# The receipts handed out on the source name the same leases here.
my ($lease1, $receipt1) = @{ $long_leases[0] };
my ($lease2, $receipt2) = @{ $long_leases[1] };
is( app(qq{SELECT rmsg.ack($lease2, $receipt1); SELECT rmsg.nack($lease2, NULL, $receipt2);
	       SELECT rmsg.ack($lease1, $receipt1)}),
	"f\nt\nt", "the source's receipts act on the target: a wrong one does not, the right ones nack and ack");
is( app(q{SELECT string_agg(convert_from(payload, 'UTF8') || ' ' || deliveries, ',')
	        FROM rmsg.get('orders', 10, visibility => '1 minute')}),
	'order 2 2', 'the nacked message is ready again; the delayed one is still delayed');
is(app(q{SELECT delayed FROM rmsg.queues WHERE queue = 'orders'}), '1', 'orders has its delayed message');

# Dead letters and dead messages.
is( app(q{SELECT string_agg(convert_from(payload, 'UTF8') || ' ' || deliveries, ',')
	        FROM rmsg.get('orders_dlq', 10, visibility => '1 minute')}),
	'poison 1', "the dead letter is in orders_dlq, with its deliveries counted from 0");
is( app(q{SELECT string_agg(coalesce(convert_from(inline_data, 'UTF8'), md5(p.data) || ':' || length(p.data)), ','
	                        ORDER BY d.msg_id)
	        FROM rmsg.dead_message d LEFT JOIN rmsg.payload p USING (payload_id)}),
	'small job,' . descr('dead'), 'the two dead messages of jobs keep their data');
is(app(q{SELECT rmsg.ack(min(msg_id)) FROM rmsg.dead_message}), 't', 'ack removes a dead message');

# A data token handed out here names the restored payload row: a put by it
# references the row, and writes none.  (The message got is given back.)
is( app(q{SELECT count(*) AS rows_before FROM rmsg.payload \gset
	SELECT msg_id AS m, data_token AS t FROM rmsg.get('fan_b', visibility => '1 minute') \gset
	SELECT rmsg.put('fan_a', NULL::bytea, data_token => :t) AS new_msg \gset
	SELECT (SELECT payload_id FROM rmsg.message WHERE msg_id = :new_msg)
	     = (SELECT payload_id FROM rmsg.message WHERE msg_id = :m),
	       (SELECT count(*) FROM rmsg.payload) = :rows_before;
	SELECT rmsg.nack(:m)}),
	"t|t\nt", 'a put by data token references the restored payload row');

# The shared data reads back through every message that references it.
my %fan_want = (
	fan_a => [ descr('token'), descr('many'), descr('token') ],
	fan_b => [ descr('token'), descr('many') ],
	fan_c => [ descr('token'), descr('many'), descr('dead') ],
	audit => [ descr('dead') ]);
for my $q (sort keys %fan_want)
{
	is( app(qq{SELECT string_agg(md5(payload) || ':' || length(payload), ',' ORDER BY msg_id)
	             FROM rmsg.get('$q', 10, visibility => '1 minute')}),
		join(',', @{ $fan_want{$q} }), "$q: each message reads its shared data");
}

# The key of the idempotent put was restored with its queue: a repeat
# returns the first msg_id and stores nothing.
is( app(q{SELECT count(*) AS before FROM rmsg.message \gset
	SELECT rmsg.put('scratch', 'twice'::text, dedup_id => 'order-77')
	     = (SELECT msg_id FROM rmsg.message WHERE convert_from(inline_data, 'UTF8') = 'once'),
	       (SELECT count(*) FROM rmsg.message) = :before}),
	't|t', 'a repeat of an idempotent put finds the restored key');

# Content dedup finds the restored data, although alice's OID differs here:
# its key is a hash of the data and of the owner's name.
is( app(q{SELECT count(*) AS rows_before FROM rmsg.payload \gset
	SELECT rmsg.put('docs', } . bytes_sql('content') . q{) AS new_msg \gset
	SELECT (SELECT payload_id FROM rmsg.message WHERE msg_id = :new_msg)
	     = (SELECT min(payload_id) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name = 'docs'),
	       (SELECT count(*) FROM rmsg.payload) = :rows_before}),
	't|t', 'a content queue finds the restored data by content: the put references it');

# The instance in recovery: only its recovery message is handed out; the
# completion releases the three deferred ones, in arrival order.  bob was
# granted receive on ord-1.
my ($resync, $resync_what) = split /\|/, app(q{SET ROLE bob;
	SELECT msg_id, convert_from(payload, 'UTF8') || ' ' || kind FROM rmsg.receive('ord-1', 10)});
is($resync_what, 'resync recovery', 'ord-1, in recovery, hands out only its recovery message');
is( app(qq{SET ROLE bob;
	BEGIN;
	SELECT rmsg.load_state('ord-1');
	SELECT rmsg.complete_recovery('ord-1', '{"status": "resynced"}');
	SELECT rmsg.ack($resync);
	COMMIT;}),
	"{\"status\": \"recovering\"}\n3\nt",
	'complete_recovery releases the three deferred messages (the saved state was restored)');
is( app(q{SET ROLE bob;
	SELECT string_agg(convert_from(payload, 'UTF8'), ',' ORDER BY msg_id) FROM rmsg.receive('ord-1', 10)}),
	'placed,address changed,paid', 'then ord-1 hands them out in arrival order');
is( app(q{SELECT disposition FROM rmsg.deliver('ord-1', 'after')}), 'ready',
	'and a new normal message is ready at once');
is( sql($target, 'app_plain', q{SELECT disposition FROM rmsg.deliver('ord-1', 'elsewhere')}), 'deferred',
	'while in the other restored database ord-1 still recovers');

# The instance message in flight holds its line until its receipt acks it.
is(app(q{SELECT count(*) FROM rmsg.receive('ord-2')}), '0', 'ord-2 has a message in flight: none handed out');
is(app("SELECT rmsg.ack($inst_lease, $inst_receipt)"), 't', "the source's receipt acks it");
is(app(q{SELECT string_agg(convert_from(payload, 'UTF8'), ',') FROM rmsg.receive('ord-2')}), 'again',
	'then ord-2 hands out its next message');

# The contract.  This is another server, so the caller must restart first;
# then it replays from its log, and the callee answers a kept call again.
is(sqlstate_of($target, 'app', q{SET ROLE alice; SELECT * FROM rmsg.prepare_call('shop', 'warehouse', 'reserve 2')}),
	'55000', 'the caller must restart on the new server (55000)');
is( app(q{SET ROLE alice; SELECT rmsg.restart('shop');
	SELECT string_agg(call_id || ' ' || callee || ' ' || coalesce(convert_from(reply, 'UTF8'), '-'), ',' ORDER BY call_id)
	  FROM rmsg.replay('shop')}),
	"{\"done\": 1}\n2 warehouse reserved 2,3 billing -",
	'restart returns the checkpointed state; the log holds the calls since');
is( app(q{SET ROLE alice;
	SELECT call_id || ' ' || coalesce(convert_from(logged_reply, 'UTF8'), '-') FROM rmsg.prepare_call('shop', 'warehouse', 'reserve 2');
	SELECT call_id || ' ' || coalesce(convert_from(logged_reply, 'UTF8'), '-') FROM rmsg.prepare_call('shop', 'billing', 'charge 2')}),
	"2 reserved 2\n3 -", 'the replay hands out the logged reply, and call 3 is to be sent');
is( app(q{SET ROLE alice;
	SELECT status || ' ' || convert_from(reply, 'UTF8') FROM rmsg.accept_call('warehouse', 'shop', 2, 'reserve 2');
	BEGIN;
	SELECT status FROM rmsg.accept_call('billing', 'shop', 3, 'charge 2');
	SELECT rmsg.reply('billing', 'shop', 3, 'charged 2');
	COMMIT;
	SELECT rmsg.record_reply('shop', 3, 'charged 2');
	SELECT next_call_id FROM rmsg.callers WHERE caller = 'shop'}),
	"duplicate reserved 2\nnew\n\n\n4",
	'the callee answers the kept call as a duplicate, and takes the new one');

# The grants act.
is(sqlstate_of($target, 'app', q{SET ROLE bob; SELECT rmsg.put('fan_a', 'from bob'::text)}), 'no error',
	'bob puts to fan_a');
is(sqlstate_of($target, 'app', q{SET ROLE bob; SELECT rmsg.put('admin', 'from bob'::text)}), 'no error',
	"bob puts to the superuser's queue");
is(sqlstate_of($target, 'app', q{SET ROLE carol; SELECT rmsg.put('fan_a', 'from carol'::text)}), '42501',
	'carol may not put to fan_a (42501)');
is(sqlstate_of($target, 'app', q{SET ROLE bob; SELECT * FROM rmsg.get('docs')}), '42501',
	'bob may not get from docs (42501)');

#---------------------------------------------------------------------------
# 5. The restored handlers run once a worker serves the database
#---------------------------------------------------------------------------

$target->append_conf('postgresql.conf', q{
rmsg.worker_count = 1
rmsg.database = 'app'
rmsg.worker_naptime = '200ms'
});
$target->restart;
ok( $target->poll_query_until('app', q{SELECT count(*) = 3 FROM public.handled}),
	'the worker handles the waiting messages of the restored handlers');
is( app(q{SELECT string_agg(target || ' ' || payload || ' ' || by_role, ',' ORDER BY target, payload)
	        FROM public.handled}),
	'auto-1 for the handler alice,work job 1 alice,work job 2 alice',
	'the queue handler and the instance handler each ran on their messages, as alice');
is(app(q{SELECT ready + in_flight FROM rmsg.queues WHERE queue = 'work'}), '0', 'and acked them');

$source->safe_psql('app', q{ROLLBACK PREPARED 'pending_put'});
$target->stop;
$source->stop;
done_testing();
