
set -eu
path=$1; mode=$2; expected=$3
dir=${path%/*}; name=${path##*/}
cd -P -- "${dir:-/}"
case $expected in
  any) ;;
  absent)
    if [ -e "$name" ] || [ -L "$name" ]; then echo "fleet: $path appeared since its facts were read; rerun" >&2; exit 3; fi ;;
  *)
    current=$(sha256sum <"$name" | cut -d' ' -f1)
    if [ "$current" != "$expected" ]; then echo "fleet: $path changed since its facts were read; rerun" >&2; exit 3; fi ;;
esac
tmp=$(mktemp "$name.fleet-XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
exec 3>>"$tmp"
fd=/proc/$$/fd/3
# shellcheck disable=SC3013 # dash's and busybox's test have -ef
if [ -L "$tmp" ] || ! [ "$tmp" -ef "$fd" ] || [ "$(stat -L -c %h "$fd")" != 1 ]; then
  echo "fleet: $dir/$tmp was replaced before fleet wrote it (by a link?); nothing written" >&2; exit 3
fi
cat >&3
chown 0:0 "$fd"
chmod "$mode" "$fd"
exec 3>&-
mv -fT -- "$tmp" "$name"
trap - EXIT
