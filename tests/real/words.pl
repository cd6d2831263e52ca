# Hashes, strings, regexes and sorts; the output must not depend on the
# allocator.
use strict;
use warnings;
my %count;
my @lines;
my $seed = 7;
for my $i (1 .. 300000) {
    $seed = ($seed * 1103515245 + 12345) % 2147483648;
    my $w = join('', map { chr(97 + ($seed >> ($_ * 3)) % 26) } 0 .. (3 + $seed % 6));
    $count{$w}++;
    push @lines, "$w:$i" if $i % 3 == 0;
}
my @top = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0 .. 9];
print scalar(keys %count), "\n";
print join(',', map { "$_=$count{$_}" } @top), "\n";
my @sorted = sort @lines;
my $joined = join("\n", @sorted[0 .. 20]);
(my $vowels = $joined) =~ s/[aeiou]//g;
print length($joined), " ", length($vowels), "\n";
print "$sorted[$_]\n" for (0, 1000, 50000, $#sorted);
