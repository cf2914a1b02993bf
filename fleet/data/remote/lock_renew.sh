
lock=$2; guard=$3; mine=$4; ttl=$5
# Renew the lease: only while the lock is still exactly ours (its checksum) and has not
# lapsed on this host's clock. A holder whose lease lapsed may do nothing, renewing
# included. Exit 0: renewed; 6: not ours any more (gone, or another's); 7: lapsed.
exec 9>>"$guard" || exit 3
flock -w 10 9 || exit 5
[ -f "$lock" ] && [ "$(cksum < "$lock")" = "$mine" ] || exit 6
[ $(( $(date +%s) - $(stat -c %Y -- "$lock") )) -le "$ttl" ] || exit 7
touch -c -- "$lock" || exit 3
