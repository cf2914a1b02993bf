#@include facts.sh

cron_file=$1; script=$2; owner=$3; group=$4; weights_user=$5; url=$6; data_root=$7; copy=$8
docker_users=$9
shift 9
echo "@@p_id"; id -u; id -un
echo "@@p_owner"; id -u "$owner" 2>/dev/null || echo absent
echo "@@p_group"; gid=$(getent group "$group" 2>/dev/null | cut -d: -f3); echo "${gid:-absent}"
echo "@@p_weights_user"
if [ -z "$weights_user" ]; then echo none; else id -u "$weights_user" 2>/dev/null || echo absent; fi
echo "@@p_paths"
i=0
for p in "$@"; do
  if [ "$p" = "$data_root" ]; then follow=-L; else follow=; fi
  if [ -e "$p" ] || [ -L "$p" ]; then stat $follow -c "$i|%F|%a|%u|%g|%U|%G" -- "$p" 2>&1 | head -n 1; else echo "$i|absent"; fi
  i=$((i + 1))
done
# $4: -L follows a symbolic link; empty: a link is reported as one and not read, and the
# file is read through one descriptor that must be the name's own file (same device and
# inode): in the data root a container may swap the name for a link between the look and
# the read, and root would read (and hash) any file of the host's.
file_fact() {
  echo "@@$1"
  if [ -e "$2" ] || [ -L "$2" ]; then
    # shellcheck disable=SC2086 # $4 is empty or -L: no word when empty
    stat $4 -c '%F|%a|%u|%g|%s' -- "$2" 2>&1 | head -n 1
    if [ -f "$2" ] && [ -r "$2" ] && { [ -n "$4" ] || [ ! -L "$2" ]; } && exec 3<"$2" &&
        { [ -n "$4" ] || [ "$(stat -L -c %d:%i /proc/self/fd/3)" = "$(stat -c %d:%i -- "$2")" ]; }; then
      sha256sum </proc/self/fd/3 | cut -d' ' -f1
      head -c "$3" </proc/self/fd/3 | base64 | tr -d '\n'; echo
    fi
    exec 3<&-
  else
    echo absent
  fi
}
file_fact p_script "$script" 262144 ""
file_fact p_copy "$copy" 262144 ""
file_fact p_cron "$cron_file" 1048576 -L
file_fact p_daemon_json /etc/docker/daemon.json 65536 -L
echo "@@p_lib"
d=${script%/*}; follow=
while :; do
  if [ -e "${d:-/}" ] || [ -L "${d:-/}" ]; then stat $follow -c '%n|%F|%a|%u|%g' -- "${d:-/}" 2>&1 | head -n 1
  else echo "${d:-/}|absent"; fi
  [ -n "$d" ] || break
  d=${d%/*}; follow=-L
done
echo "@@p_lib_real"
lib=${script%/*}; readlink -f -- "${lib%/*}" || echo absent
readlink -f -- "$data_root" || echo absent
echo "@@p_tools"
for t in python3 flock setpriv setsid nvidia-container-runtime-hook nvidia-ctk nvidia-container-runtime dockerd; do
  command -v "$t" >/dev/null 2>&1 && echo "$t"
done
echo "@@p_os"
for k in ID ID_LIKE PRETTY_NAME VERSION_CODENAME UBUNTU_CODENAME; do
  printf '%s|' "$(sed -n "s/^$k=//p" /etc/os-release 2>/dev/null | head -n 1 | tr -d "\"'")"
done
echo
echo "@@p_packages"
# shellcheck disable=SC2016 # dpkg-query's own ${...} fields
dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n' docker.io docker-ce docker-ce-cli containerd.io nvidia-container-toolkit python3 cron util-linux ca-certificates 2>/dev/null
echo "@@p_docker_users"
# NAME|UID (or absent)|yes when a member of the docker group
for u in $docker_users; do
  uid=$(id -u "$u" 2>/dev/null) || uid=absent
  case " $(id -nG "$u" 2>/dev/null) " in *" docker "*) member=yes ;; *) member=no ;; esac
  echo "$u|$uid|$member"
done
echo "@@p_engine_manager"
if [ -d /run/systemd/system ] && systemctl is-active --quiet docker 2>/dev/null; then echo systemd
elif [ -x /etc/init.d/docker ] && /etc/init.d/docker status >/dev/null 2>&1; then echo sysv
else echo none; fi
echo "@@p_cdi"
# shellcheck disable=SC2010 # names are only matched, never used as paths
ls /etc/cdi /var/run/cdi 2>/dev/null | grep -i nvidia
echo "@@p_crond"
if command -v pgrep >/dev/null 2>&1; then pgrep -x 'cron|crond' | head -n 1 || echo none
else echo unknown; fi
echo "@@p_limits"
pid=$(pgrep -xo dockerd 2>/dev/null || pidof -s dockerd 2>/dev/null)
if [ -n "$pid" ] && [ -r "/proc/$pid/limits" ]; then echo "source dockerd"; else pid=$$; echo "source shell"; fi
grep -E '^Cap(Eff|Bnd):' "/proc/$pid/status"
cat "/proc/$pid/limits"
echo "@@p_df_data"
d=$data_root; while [ ! -e "$d" ]; do d=$(dirname -- "$d"); done
df -PB1 -- "$d" | tail -n 1
echo "@@p_weights"
if command -v python3 >/dev/null 2>&1; then
python3 -I -c '
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    opener.open(sys.argv[1], timeout=3).close()
    print("up")
except urllib.error.HTTPError as exc:
    print("up", exc.code)
except Exception as exc:
    print("down", exc)
' "$url"
else echo "down: python3 is missing"; fi
echo "@@end"
