
set -C
umask 077
dir=$(dirname -- "$1") && name=$(basename -- "$1") || exit 1
tmp=$(mktemp -u -- "$dir/.$name.XXXXXX") || exit 1
exec 3>"$tmp" || exit 1
if cat >&3 && chmod -- "$2" /proc/self/fd/3 && mv -fT -- "$tmp" "$1"; then exit 0; fi
rm -f -- "$tmp"
exit 1
