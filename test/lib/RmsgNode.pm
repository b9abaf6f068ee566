# The node set-up of the TAP tests: a PostgreSQL::Test::Cluster node that
# preloads the library (so the worker, long polling and the shared caches
# exist), with a given number of workers and a file's own settings.  Nodes
# made otherwise on purpose (without the library, or from a backup) keep
# their own set-up.
#
#   my $node = new_node('crash', conf => q{
#   synchronous_commit = on
#   });

package RmsgNode;

use strict;
use warnings FATAL => 'all';

use Carp;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(new_node);

# Makes, configures and starts a node named $name; returns it.  Options:
#   workers           rmsg.worker_count; 0 by default: a worker's
#                     maintenance (collecting payloads, dead-lettering,
#                     handlers) would act on a schedule of its own where
#                     most tests check what the SQL functions do by
#                     themselves
#   conf              more postgresql.conf: a string, or a reference to a
#                     list of lines; written after the two settings above,
#                     so it may override them
#   allows_streaming  passed to init (a primary that a standby is made from)
#   start             0 leaves the node stopped (1 by default)
#   extension         1 runs CREATE EXTENSION recoverable_msg in database
#                     postgres once the node runs
# The settings go at the end of postgresql.conf; a later append_conf
# overrides them before a restart.
sub new_node
{
	my ($name, %opt) = @_;
	my %known = map { $_ => 1 } qw(workers conf allows_streaming start extension);
	$known{$_} or croak "new_node: unknown option '$_'" for keys %opt;
	my $start = $opt{start} // 1;
	croak 'new_node: extension => 1 needs a started node'
	  if $opt{extension} && !$start;

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init($opt{allows_streaming} ? (allows_streaming => $opt{allows_streaming}) : ());

	my $conf = $opt{conf} // '';
	$conf = join("\n", @$conf) if ref $conf eq 'ARRAY';
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'recoverable_msg'\n"
		  . 'rmsg.worker_count = ' . ($opt{workers} // 0) . "\n"
		  . $conf . "\n");

	if ($start)
	{
		$node->start;
		$node->safe_psql('postgres', 'CREATE EXTENSION recoverable_msg')
		  if $opt{extension};
	}
	return $node;
}

1;
