
dir=$1; lock=$2; guard=$3; stale=$4
mkdir -p -- "$dir" || exit 3
command -v flock >/dev/null 2>&1 || { echo "flock (util-linux) is not installed" >&2; exit 4; }
exec 9>>"$guard" || exit 3
flock -w 10 9 || exit 5
if [ -n "$stale" ] && [ -f "$lock" ] && [ "$(cksum < "$lock")" = "$stale" ]; then
  cat > "$lock.new" && mv -f -- "$lock.new" "$lock" || exit 3
  echo "@@sum $(cksum < "$lock")"; exit 0
fi
# noclobber: a controller of an older fleet creates the lock the same way, without flock.
if ( set -C; cat > "$lock" ) 2>/dev/null; then echo "@@sum $(cksum < "$lock")"; exit 0; fi
echo "@@sum $(cksum 2>/dev/null < "$lock")"
echo "@@age $(( $(date +%s) - $(stat -c %Y -- "$lock" 2>/dev/null || date +%s) ))"
echo "@@lock"; head -c 65536 -- "$lock" 2>/dev/null
exit 1
