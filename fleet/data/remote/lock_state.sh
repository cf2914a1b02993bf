
lock=$2; guard=$3
# What the lock is, under the same flock as its changes (nothing is changed): checksum,
# age on this host's clock, content. No lock: nothing printed.
[ -e "$guard" ] && exec 9<"$guard" && { flock -s -w 10 9 || exit 5; }
[ -f "$lock" ] || exit 0
echo "@@sum $(cksum 2>/dev/null < "$lock")"
echo "@@age $(( $(date +%s) - $(stat -c %Y -- "$lock" 2>/dev/null || date +%s) ))"
echo "@@lock"; head -c 65536 -- "$lock" 2>/dev/null
exit 0
