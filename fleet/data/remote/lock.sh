
dir=$1; lock=$2; guard=$3; stale=$4
# The lock and the history are shared by all who may drive the engine: root (or sudo) and
# the docker group's users, who are root's equals on this host anyway. So the directory is
# root:docker 2775 and its files group-writable; root mends what an older fleet (0755) or
# a restored copy (0644) left.
umask 002
mkdir -p -- "$dir" || exit 3
if [ "$(id -u)" = 0 ] && getent group docker >/dev/null 2>&1; then
  for path in "$dir" "$guard" "$dir/history.jsonl"; do
    # Only the directory and files themselves: a name that is a symlink is left alone.
    if [ ! -e "$path" ] || [ -L "$path" ]; then continue; fi
    case $(stat -c %G:%A -- "$path") in docker:?????w*) continue ;; esac
    chgrp docker -- "$path" && chmod g+w -- "$path" || exit 3
  done
  [ -g "$dir" ] || chmod g+s -- "$dir" || exit 3
fi
command -v flock >/dev/null 2>&1 || { echo "flock (util-linux) is not installed" >&2; exit 4; }
exec 9>>"$guard" || exit 3
flock -w 10 9 || exit 5
# Our document goes to a file of its own first and becomes the lock whole or not at all: a
# connection cut while it arrives (it is one line, ending in a newline) leaves no lock, never
# an empty or cut one that would count as held. One name is enough: we hold the flock.
#@include whole_line.sh
new=$lock.new
receive_whole "$new" "lock document"
if [ -n "$stale" ] && [ -f "$lock" ] && [ "$(cksum < "$lock")" = "$stale" ]; then
  mv -f -- "$new" "$lock" || exit 3
  echo "@@sum $(cksum < "$lock")"; exit 0
fi
# A hard link fails when the lock exists, as the noclobber creation of an older fleet's
# controller (without flock) does: of the two, exactly one wins.
if ln -- "$new" "$lock" 2>/dev/null; then
  rm -f -- "$new"; echo "@@sum $(cksum < "$lock")"; exit 0
fi
rm -f -- "$new"
echo "@@sum $(cksum 2>/dev/null < "$lock")"
echo "@@age $(( $(date +%s) - $(stat -c %Y -- "$lock" 2>/dev/null || date +%s) ))"
echo "@@lock"; head -c 65536 -- "$lock" 2>/dev/null
exit 1
