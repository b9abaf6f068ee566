use strict;
use warnings FATAL => 'all';

# The cache of instance modes lives in shared memory, which every database
# of the cluster shares.  Instances of the same name in two databases are
# different instances; an instance made again after DROP EXTENSION and
# CREATE EXTENSION is a new one.  Each delivery here follows a delivery that
# filled the cache for a same-named instance in the other mode, so a cache
# keyed by the name alone would report the wrong disposition.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

# workers => 1: the server's default, which this file was written against
# (it calls no handler).
my $node = new_node('instance_cache', workers => 1);
$node->safe_psql('postgres', 'CREATE DATABASE other');
for my $db ('postgres', 'other')
{
	$node->safe_psql($db,
		"CREATE EXTENSION recoverable_msg; SELECT rmsg.create_instance('same');");
}

sub disposition
{
	my ($db, $instance) = @_;
	return $node->safe_psql($db,
		"SELECT disposition FROM rmsg.deliver('$instance', 'x')");
}

$node->safe_psql('postgres', "SELECT rmsg.begin_recovery('same')");
is(disposition('postgres', 'same'), 'deferred',
	'recovering in one database: deferred there');
is(disposition('other', 'same'), 'ready',
	'the same name in another database is another instance: ready');
is(disposition('postgres', 'same'), 'deferred', '... and the first still deferred');

$node->safe_psql('other', "SELECT rmsg.begin_recovery('same')");
$node->safe_psql('postgres', "SELECT rmsg.complete_recovery('same')");
is(disposition('other', 'same'), 'deferred', 'modes swapped: deferred in the other');
is(disposition('postgres', 'same'), 'ready', '... ready in the first');

# The extension made again: its instance of the old name is a new instance.
is(disposition('other', 'same'), 'deferred', 'cached as recovering');
$node->safe_psql('other',
	"DROP EXTENSION recoverable_msg; CREATE EXTENSION recoverable_msg;"
	  . " SELECT rmsg.create_instance('same');");
is(disposition('other', 'same'), 'ready',
	'after DROP and CREATE EXTENSION, the new instance of that name is ready');
is( $node->safe_psql('other',
		"SELECT mode || ' ' || ready || ' ' || deferred FROM rmsg.instances"),
	'normal 1 0',
	'... and the view agrees');

$node->stop;
done_testing();
