use strict;
use warnings FATAL => 'all';

# Updating from 1.0.  A database whose extension is still at 1.0 meets the
# 1.1 library: its functions refuse with 55000 and a hint to run ALTER
# EXTENSION ... UPDATE (never a call with arguments of another shape), and
# the worker waits for the update instead of failing.  The update keeps
# every message, instance, caller and handler; the rights roles held on the
# tables in 1.0 become the matching privileges on what existed, and then no
# role but the owner holds any right on the tables.  And an updated 1.0 is
# the same as a fresh 1.1: every function with its signature and
# properties, every table with its columns, constraints and indexes, every
# view, grant, comment and dumped table (test/lib/describe_extension.sql).

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

my $node = new_node(
	'upgrade',
	workers => 1,
	conf    => q{
rmsg.database = 'upd'
rmsg.worker_naptime = '200ms'
});

sub sql
{
	my ($db, $query) = @_;
	return $node->safe_psql($db, $query);
}

# The SQLSTATE and message of an error, or 'no error'.
sub error_of
{
	my ($db, $query) = @_;
	my ($rc, $out, $err) = $node->psql($db, $query,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return 'no error' if $rc == 0;
	$err =~ s/\n(LOCATION|CONTEXT):.*//s;
	$err =~ s/^psql:[^:]*:\d+: //;
	return $err;
}

sql('postgres', 'CREATE DATABASE upd; CREATE DATABASE fresh;');

#---------------------------------------------------------------------------
# 1. A database at 1.0, with its data and the rights 1.0 asked for
#---------------------------------------------------------------------------

sql('upd', q{
	CREATE EXTENSION recoverable_msg VERSION '1.0';
	CREATE ROLE producer; CREATE ROLE consumer; CREATE ROLE creator;
	CREATE ROLE receiver; CREATE ROLE component_role; CREATE ROLE bystander;
	CREATE ROLE queue_admin; CREATE ROLE instance_admin;
	GRANT USAGE ON SCHEMA rmsg TO producer, consumer, creator, receiver, component_role, bystander,
	                              queue_admin, instance_admin;
	GRANT SELECT ON rmsg.queue TO producer, consumer, creator;
	GRANT SELECT, INSERT ON rmsg.message, rmsg.payload TO producer;
	GRANT USAGE ON SEQUENCE rmsg.msg_id_seq, rmsg.payload_id_seq TO producer;
	GRANT SELECT, UPDATE, DELETE ON rmsg.message, rmsg.dead_message TO consumer;
	GRANT SELECT, INSERT, DELETE ON rmsg.queue TO creator;
	GRANT SELECT, UPDATE, DELETE ON rmsg.instance_message TO receiver;
	GRANT SELECT, INSERT, UPDATE ON rmsg.caller, rmsg.call_log, rmsg.last_call TO component_role;
	GRANT SELECT ON ALL TABLES IN SCHEMA rmsg TO bystander;
	-- everything a queue's put, get and drop took; an instance's deliver,
	-- receive and drop
	GRANT SELECT, INSERT, UPDATE, DELETE ON rmsg.message, rmsg.dead_message, rmsg.payload TO queue_admin;
	GRANT SELECT, DELETE ON rmsg.queue TO queue_admin;
	GRANT USAGE ON SEQUENCE rmsg.msg_id_seq, rmsg.payload_id_seq TO queue_admin;
	GRANT SELECT, INSERT, UPDATE, DELETE ON rmsg.instance_message TO instance_admin;
	GRANT SELECT, DELETE ON rmsg.instance TO instance_admin;
	GRANT USAGE ON SEQUENCE rmsg.msg_id_seq TO instance_admin;
});

# The 1.1 library refuses the 1.0 objects with a pointer to the update.
is( error_of('upd', q{SELECT rmsg.create_queue('q')}),
	qq{ERROR:  55000: extension "recoverable_msg" is at version 1.0 in this database, but its library needs version 1.1\nHINT:  Run ALTER EXTENSION recoverable_msg UPDATE.},
	'1.0 SQL with the 1.1 library: 55000 and the hint');
like(error_of('upd', q{SELECT * FROM rmsg.get('q')}), qr/55000/, 'get too: 55000');
like(error_of('upd', q{SELECT * FROM rmsg.log_stats}), qr/55000/, 'the views too: 55000');
like(error_of('upd', q{SELECT rmsg.last_data_token()}), qr/55000/, 'last_data_token too: 55000');

# Data as 1.0 left it (written directly: the 1.0 functions cannot run with
# this library).  A queue with a ready message and a dead one, an instance in
# recovery with a deferred message, a caller with its log, a callee's reply,
# a subscription whose handler the worker will run after the update.
sql('upd', q{
	CREATE TABLE handled (payload text);
	CREATE FUNCTION h(p bytea) RETURNS void LANGUAGE sql AS $$ INSERT INTO handled VALUES (convert_from(p, 'UTF8')) $$;
	INSERT INTO rmsg.queue (name, max_deliveries, dedup) VALUES ('orders', 5, 'token'), ('handled_q', 5, 'token');
	INSERT INTO rmsg.message (queue_id, visible_at, enqueued_at, payload_size, inline_data)
	SELECT queue_id, now(), now(), 3, 'one' FROM rmsg.queue WHERE name = 'orders';
	INSERT INTO rmsg.dead_message (msg_id, queue_id, deliveries, enqueued_at, died_at, payload_size, inline_data)
	SELECT nextval('rmsg.msg_id_seq'), queue_id, 5, now(), now(), 4, 'dead' FROM rmsg.queue WHERE name = 'orders';
	INSERT INTO rmsg.instance (name, mode, recovery_since, state) VALUES ('order-1', 'recovery', now(), '{"step": 1}');
	INSERT INTO rmsg.instance_message (msg_id, instance_id, kind, enqueued_at, payload)
	SELECT nextval('rmsg.msg_id_seq'), instance_id, 'normal', now(), 'deferred' FROM rmsg.instance;
	INSERT INTO rmsg.caller (caller, next_call_id, incarnation) VALUES ('shop', 2, now());
	INSERT INTO rmsg.call_log (caller, call_id, callee, request, reply) VALUES ('shop', 1, 'billing', 'req', 'rep');
	INSERT INTO rmsg.last_call (callee, caller, call_id, reply) VALUES ('billing', 'shop', 1, 'rep');
	INSERT INTO rmsg.subscription (queue_id, handler, batch, owner)
	SELECT queue_id, 'h(bytea)', 1, 'postgres' FROM rmsg.queue WHERE name = 'handled_q';
	INSERT INTO rmsg.message (queue_id, visible_at, enqueued_at, payload_size, inline_data)
	SELECT queue_id, now(), now(), 7, 'waiting' FROM rmsg.queue WHERE name = 'handled_q';
});

# The worker waits for the update; it does not fail every time it looks.
my $log_offset = -s $node->logfile;
sleep(1);
is(sql('upd', 'SELECT count(*) FROM handled'), '0', 'before the update the worker handles nothing');
unlike(slurp_file($node->logfile, $log_offset), qr/ERROR|FATAL/, 'and logs no error while it waits');

#---------------------------------------------------------------------------
# 2. The update
#---------------------------------------------------------------------------

# 1.0 let a role with the TRIGGER right put a trigger on a table; from 1.1 it
# would run as the tables' owner.  The update refuses while one is there.
sql('upd', q{
	CREATE FUNCTION planted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
	CREATE TRIGGER planted AFTER INSERT ON rmsg.message FOR EACH ROW EXECUTE FUNCTION planted();
});
like(
	error_of('upd', q{ALTER EXTENSION recoverable_msg UPDATE}),
	qr/55000: the tables of recoverable_msg have triggers: planted on rmsg.message/,
	'the update refuses a trigger on the tables (55000)');
is(sql('upd', q{SELECT extversion FROM pg_extension WHERE extname = 'recoverable_msg'}), '1.0',
	'and leaves the extension at 1.0');
sql('upd', q{DROP TRIGGER planted ON rmsg.message; DROP FUNCTION planted()});

sql('upd', q{ALTER EXTENSION recoverable_msg UPDATE});
is(sql('upd', q{SELECT extversion FROM pg_extension WHERE extname = 'recoverable_msg'}), '1.1', 'at 1.1');

# Everything is still there, and works.
is( sql('upd', q{SELECT queue || ':' || ready || ':' || dead FROM rmsg.queues WHERE queue = 'orders'}),
	'orders:1:1', 'the queue keeps its ready and dead messages');
is( sql('upd', q{SELECT instance || ':' || mode || ':' || deferred FROM rmsg.instances}),
	'order-1:recovery:1', 'the instance keeps its mode and deferred message');
is(sql('upd', q{SELECT call_id || ':' || reply FROM rmsg.replay('shop')}), '1:\x726570', 'the caller keeps its log');
$node->poll_query_until('upd', q{SELECT count(*) = 1 FROM handled})
  or diag('the worker did not handle the waiting message');
is(sql('upd', q{SELECT string_agg(payload, ',') FROM handled}), 'waiting',
	'after the update the worker handles the subscription of 1.0');

# What existed belongs to the extension's owner; the rights of 1.0 became
# privileges on it.
is( sql('upd', q{SELECT string_agg(DISTINCT owner::text, ',') FROM (
	        SELECT owner FROM rmsg.queue UNION ALL SELECT owner FROM rmsg.instance
	        UNION ALL SELECT owner FROM rmsg.component) o}),
	'postgres', 'queues, instances and components belong to the extension owner');
is( sql('upd', q{SELECT string_agg(name, ',' ORDER BY name) FROM rmsg.component}),
	'billing,shop', 'every caller and callee became a component');
is( sql('upd', q{SELECT string_agg(kind || ' ' || object || ' ' || grantee || ' ' || privilege, E'\n'
	                   ORDER BY kind, object, grantee::text, privilege) FROM rmsg.privileges}),
	join("\n",
		'component billing component_role use',
		'component shop component_role use',
		'instance order-1 instance_admin deliver',
		'instance order-1 instance_admin manage',
		'instance order-1 instance_admin receive',
		'instance order-1 receiver receive',
		'queue handled_q consumer get',
		'queue handled_q producer put',
		'queue handled_q queue_admin get',
		'queue handled_q queue_admin manage',
		'queue handled_q queue_admin put',
		'queue orders consumer get',
		'queue orders producer put',
		'queue orders queue_admin get',
		'queue orders queue_admin manage',
		'queue orders queue_admin put'),
	'the rights on the tables became privileges on what existed, each with all it took in 1.0');
is( sql('upd', q{SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
	              WHERE c.relnamespace = 'rmsg'::regnamespace AND c.relkind IN ('r', 'S')
	                AND a.grantee <> c.relowner}),
	'0', 'no role but the owner holds a right on a table or sequence');
is( sql('upd', q{SELECT string_agg(r.rolname, ',' ORDER BY r.rolname) FROM pg_roles r
	              WHERE has_function_privilege(r.oid, 'rmsg.create_queue(text, int, text, text, interval)', 'EXECUTE')
	                AND NOT r.rolsuper AND r.rolname NOT LIKE 'pg\_%'}),
	'creator', 'the role that could insert queues may create them');

# The roles do what they did before, and no more.
is(sql('upd', q{SET ROLE producer; SELECT rmsg.put('orders', 'two'::text) > 0}), 't', 'producer puts');
like(error_of('upd', q{SET ROLE producer; SELECT * FROM rmsg.get('orders')}), qr/42501/, 'producer may not get');
is(sql('upd', q{SET ROLE consumer; SELECT count(*) FROM rmsg.get('orders', 5)}), '2', 'consumer gets');
sql('upd', q{SET ROLE creator; SELECT rmsg.create_queue('new_q')});
is(sql('upd', q{SET ROLE creator; SELECT owner FROM rmsg.queues WHERE queue = 'new_q'}),
	'creator', 'creator creates queues of its own');
like(error_of('upd', q{SET ROLE creator; SELECT rmsg.drop_queue('orders')}), qr/42501/,
	'creator may not drop a queue of 1.0 (dropping took rights on the messages too)');
is( sql('upd', q{SET ROLE queue_admin; SELECT rmsg.put('orders', 'three'::text) > 0;
	              SELECT rmsg.grant_queue('orders', 'bystander', 'get');
	              SELECT rmsg.has_queue_privilege('bystander', 'orders', 'get')}),
	"t

t", 'queue_admin puts and grants');
is( sql('upd', q{SET ROLE instance_admin; SELECT count(*) FROM rmsg.deliver('order-1', 'x'::bytea);
	              SELECT rmsg.grant_instance('order-1', 'bystander', 'deliver')}),
	"1
", 'instance_admin delivers and grants');
is(sql('upd', q{SET ROLE receiver; SELECT rmsg.complete_recovery('order-1')}), '2',
	'receiver completes the recovery (releasing the deferred messages of 1.0 and of instance_admin)');
is( sql('upd', q{SET ROLE component_role; SELECT rmsg.restart('shop') IS NULL;
	              SELECT logged_reply FROM rmsg.prepare_call('shop', 'billing', 'req')}),
	"t\n\\x726570", 'component_role goes on as the caller');
is(sql('upd', q{SET ROLE bystander; SELECT string_agg(queue, ',') FROM rmsg.queues}), 'orders',
	'bystander sees only the queue it was granted since');
like(error_of('upd', q{SET ROLE bystander; SELECT count(*) FROM rmsg.message}), qr/42501/,
	'nor reads the tables any more');

#---------------------------------------------------------------------------
# 3. A handler forged under 1.0: a role that could write rmsg.subscription
#    named a superuser as the handler's owner.  Where roles could write the
#    handler tables, the update removes the handlers that run as a superuser
#    (with a warning naming them) and keeps the others.
#---------------------------------------------------------------------------

sql('postgres', 'CREATE DATABASE forged;');
sql('forged', q{
	CREATE EXTENSION recoverable_msg VERSION '1.0';
	CREATE ROLE attacker; CREATE ROLE honest;
	GRANT USAGE ON SCHEMA rmsg TO attacker;
	GRANT SELECT, INSERT ON rmsg.subscription, rmsg.instance_handler TO attacker;
	CREATE FUNCTION evil(p bytea) RETURNS void LANGUAGE sql AS 'SELECT 1';
	CREATE FUNCTION fine(p bytea) RETURNS void LANGUAGE sql AS 'SELECT 1';
	CREATE FUNCTION evil_i(i text, p bytea) RETURNS void LANGUAGE sql AS 'SELECT 1';
	INSERT INTO rmsg.queue (name, max_deliveries, dedup) VALUES ('target', 5, 'token'), ('kept', 5, 'token');
	INSERT INTO rmsg.subscription (queue_id, handler, batch, owner)
	SELECT queue_id, 'evil(bytea)', 1, 'postgres' FROM rmsg.queue WHERE name = 'target';
	INSERT INTO rmsg.subscription (queue_id, handler, batch, owner)
	SELECT queue_id, 'fine(bytea)', 1, 'honest' FROM rmsg.queue WHERE name = 'kept';
	INSERT INTO rmsg.instance_handler (prefix, handler, owner) VALUES ('x-', 'evil_i(text,bytea)', 'postgres');
});
my ($rc, $out, $err) = $node->psql('forged', q{ALTER EXTENSION recoverable_msg UPDATE});
is($rc, 0, 'the update of a database with forged handlers succeeds');
like($err, qr/WARNING:  removing the handler of queue target that runs as superuser postgres/,
	'and warns of the forged queue handler');
like($err, qr/WARNING:  removing the handler of instance prefix 'x-' that runs as superuser postgres/,
	'and of the forged instance handler');
is(sql('forged', q{SELECT string_agg(kind || ' ' || target || ' ' || owner, ',') FROM rmsg.handlers}),
	'queue kept honest', 'only the handler of an ordinary role is kept');

#---------------------------------------------------------------------------
# 4. An updated 1.0 is a fresh 1.1 (in a database where 1.0 was installed
#    and nothing granted, since grants of the database's own are kept)
#---------------------------------------------------------------------------

sql('postgres', 'CREATE DATABASE plain;');
sql('plain', q{CREATE EXTENSION recoverable_msg VERSION '1.0'});
sql('plain', q{ALTER EXTENSION recoverable_msg UPDATE});
sql('fresh', q{CREATE EXTENSION recoverable_msg});
my $describe = slurp_file("$FindBin::RealBin/../lib/describe_extension.sql");
my $updated = sql('plain', $describe);
my $fresh = sql('fresh', $describe);
my @updated_lines = split /\n/, $updated;
ok(@updated_lines > 400, 'the description covers the objects (' . scalar(@updated_lines) . ' lines)');
is($updated, $fresh, 'an updated 1.0 describes exactly as a fresh 1.1');
if ($updated ne $fresh)
{
	my %in_fresh = map { $_ => 1 } split /\n/, $fresh;
	my %in_updated = map { $_ => 1 } @updated_lines;
	diag("only in the updated: $_") for grep { !$in_fresh{$_} } @updated_lines;
	diag("only in the fresh: $_") for grep { !$in_updated{$_} } split /\n/, $fresh;
}

$node->stop;
done_testing();
