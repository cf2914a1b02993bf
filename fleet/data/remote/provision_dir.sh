
set -euf
root=$1; path=$2; owner=$3; mode=$4
mkdir -p -- "$root"
cd -P -- "$root"
here=$(pwd -P); at=$root
IFS=/
for part in ${path#"$root"}; do
  [ -n "$part" ] || continue
  [ -e "$part" ] || [ -L "$part" ] || mkdir -- "$part" || [ -d "$part" ]
  cd -P -- "$part"
  here=${here%/}/$part; at=$at/$part
  if [ "$(pwd -P)" != "$here" ]; then
    echo "fleet: $at leads to $(pwd -P): a symbolic link below the data root; fleet does not change what it points to" >&2
    exit 3
  fi
done
if [ -n "$owner" ]; then chown -- "$owner" .; fi
if [ -n "$mode" ]; then chmod -- "$mode" .; fi
