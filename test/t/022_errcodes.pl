
# Copyright (c) 2026, estream developers

# estream's own SQLSTATEs are registered once, in src/errcodes.h, and
# documented once, in the table "Error codes" of docs/reference.md.  This
# test reads the sources (it needs no server) and checks:
# - the registry: one ERRCODE_ESTREAM_* macro per code, each after a
#   comment that starts with its code; every code in one class that the
#   SQL standard leaves to implementations (first character 5-9 or I-Z)
#   and that PostgreSQL does not use;
# - the sources: every SQLSTATE that src/sql/ (PL/pgSQL and SQL, update
#   scripts included) and src/*.c write as a literal and that is not
#   PostgreSQL's (utils/errcodes.h of the server of pg_config) is
#   registered; C names estream's codes by their macros, and no file but
#   the registry uses MAKE_SQLSTATE; every registered code is raised
#   somewhere (a literal in src/sql/, or its macro in C);
# - the documentation: the table lists exactly the registered codes, each
#   with its macro;
# - no file of the tree (sources, docs, tests) names a code of the class
#   that is not registered.
# A literal counts as an SQLSTATE when it has five characters, digits and
# capitals, with a digit or the registry's class ('USAGE' is not one).

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

# what PostgreSQL defines
my ($incdir) = run_command([ 'pg_config', '--includedir-server' ]);
chomp $incdir;
my %pg_code;
for (split /\n/, slurp_file("$incdir/utils/errcodes.h"))
{
	$pg_code{ join '', $2, $3, $4, $5, $6 } = $1
	  if /^#define\s+(ERRCODE_\w+)\s+MAKE_SQLSTATE\('(.)',\s*'(.)',\s*'(.)',\s*'(.)',\s*'(.)'\)/;
}
cmp_ok(scalar keys %pg_code, '>', 200, "PostgreSQL's SQLSTATEs read from $incdir/utils/errcodes.h");
my %pg_class = map { substr($_, 0, 2) => 1 } keys %pg_code;

# the registry
my $registry = slurp_file('src/errcodes.h');
my (%macro_of, %code_of);
while ($registry =~
	/(\*\/\n)?#define\s+(\w+)\s+MAKE_SQLSTATE\('(.)',\s*'(.)',\s*'(.)',\s*'(.)',\s*'(.)'\)/g)
{
	my ($commented, $macro, $code) = ($1, $2, join('', $3, $4, $5, $6, $7));
	like($macro, qr/^ERRCODE_ESTREAM_[A-Z0-9_]+$/, "$code: macro $macro is named ERRCODE_ESTREAM_*");
	ok(!exists $macro_of{$code}, "$code is registered once");
	ok(!exists $code_of{$macro}, "$macro is defined once");
	ok(defined $commented, "$code ($macro) has a comment");
	like($registry, qr/\/\*\n \* \Q$code\E: (?:(?!\*\/).)*\*\/\n#define\s+\Q$macro\E\s/s,
		"the comment of $macro starts with its code");
	$macro_of{$code} = $macro;
	$code_of{$macro} = $code;
}
ok(scalar keys %macro_of, 'src/errcodes.h registers codes');
my %class = map { substr($_, 0, 2) => 1 } keys %macro_of;
is(scalar keys %class, 1, 'every registered code is in one class');
my ($class) = keys %class;
like($class, qr/^[5-9I-Z][0-9A-Z]$/,
	"class $class is one the SQL standard leaves to implementations");
ok(!$pg_class{$class}, "PostgreSQL does not use class $class");

# SQLSTATE literals in the sources
sub is_sqlstate
{
	my ($s) = @_;
	return $s =~ /^[0-9A-Z]{5}$/ && ($s =~ /[0-9]/ || substr($s, 0, 2) eq $class);
}

my @sql_files = sort(glob('src/sql/*.sql'), glob('src/sql/updates/*.sql'));
my @c_files = sort(glob('src/*.c'), grep { $_ ne 'src/errcodes.h' } glob('src/*.h'));
ok(scalar @sql_files > 5 && scalar @c_files > 5, 'sources found');

my (%used, @unregistered);
for my $file (@sql_files)
{
	my $n = 0;
	for my $line (split /\n/, slurp_file($file))
	{
		$n++;
		while ($line =~ /'([0-9A-Z]{5})'/g)
		{
			my $s = $1;
			next unless is_sqlstate($s);
			if ($macro_of{$s}) { $used{$s} = 1; }
			elsif (!$pg_code{$s}) { push @unregistered, "$file:$n: '$s'"; }
		}
	}
}
for my $file (@c_files)
{
	my $text = slurp_file($file);
	unlike($text, qr/MAKE_SQLSTATE/, "$file takes its SQLSTATEs from a registry, not MAKE_SQLSTATE");
	while ($text =~ /\b(ERRCODE_ESTREAM_\w+)/g)
	{
		if ($code_of{$1}) { $used{ $code_of{$1} } = 1; }
		else { push @unregistered, "$file: $1"; }
	}
	while ($text =~ /"([0-9A-Z]{5})"/g)
	{
		push @unregistered, "$file: \"$1\"" if is_sqlstate($1) && !$pg_code{$1};
	}
}
is(join("\n", @unregistered), '', 'every SQLSTATE of src/ is PostgreSQL\'s or registered');
is(join(' ', grep { !$used{$_} } sort keys %macro_of), '', 'every registered code is raised');

# the documentation
my $reference = slurp_file('docs/reference.md');
my ($section) = $reference =~ /^## Error codes\n(.*?)(?=^## )/ms;
ok(defined $section, 'docs/reference.md has a section "Error codes"');
my %documented;
while (($section // '') =~ /^\| `([0-9A-Z]{5})` \| `(\w+)` \|/mg)
{
	ok(!exists $documented{$1}, "$1 is documented once");
	$documented{$1} = $2;
}
is( join(' ', map { "$_=$documented{$_}" } sort keys %documented),
	join(' ', map { "$_=$macro_of{$_}" } sort keys %macro_of),
	'the table of docs/reference.md lists the registered codes with their macros');

# no unregistered code of the class anywhere
my @files = grep { -f $_ } (
	glob('src/*.[ch]'), @sql_files, glob('docs/*.md'), 'README.md', 'CHANGELOG.md',
	glob('sql/*.sql'), glob('expected/*.out'), glob('specs/*.spec'),
	glob('test/t/*.pl'), glob('test/sql/*.sql'));
my @stray;
for my $file (@files)
{
	my $n = 0;
	for my $line (split /\n/, slurp_file($file))
	{
		$n++;
		while ($line =~ /\b(\Q$class\E[0-9A-Z]{3})\b/g)
		{
			push @stray, "$file:$n: $1" unless $macro_of{$1};
		}
	}
}
is(join("\n", @stray), '', "no file names an unregistered code of class $class");

done_testing();
