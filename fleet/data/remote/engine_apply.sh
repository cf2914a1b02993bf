# Make the Docker engine take its new /etc/docker/daemon.json, or put the old one back.
# $1: yes when a restart is needed (log options), no when a reload (SIGHUP) is enough;
# $2: what manages the engine (systemd, sysv, none); $3: the backup of the old file, or -
# when there was none. First a reload: it turns live-restore on without stopping anything.
# A restart follows only once live-restore is on, or when no container runs: a restart
# without it would stop the framework in the middle of a training job. When the engine
# does not answer after the restart, the old file goes back and the engine restarts again.
# A backup of = : the file did not change (a reload of what it says), so none goes back.
# $4: seconds the engine has to answer after a restart (live-restore may take long with
# many containers).
restart=$1; manager=$2; backup=$3; wait=$4; conf=/etc/docker/daemon.json

restore() {
  case $backup in
    -) rm -f -- "$conf" ;;
    =) ;;
    *) cp -p -- "$backup" "$conf" ;;
  esac
}
hup() {
  pid=$(cat /var/run/docker.pid 2>/dev/null)
  [ -n "$pid" ] || pid=$(pgrep -xo dockerd)
  [ -n "$pid" ] && kill -HUP "$pid"
}
# Waits up to $1 seconds for the engine to answer; prints whether live-restore is on.
answers() {
  i=0
  while [ "$i" -lt "$1" ]; do
    docker info --format '{{.LiveRestoreEnabled}} {{.ContainersRunning}}' 2>/dev/null && return 0
    sleep 1; i=$((i + 1))
  done
  return 1
}
engine() {
  case $manager in
    systemd) systemctl "$1" docker ;;
    sysv) /etc/init.d/docker "$1" ;;
    *) return 1 ;;
  esac
}
was() {
  case $backup in
    -) echo "removed (there was none)" ;;
    =) echo "left as it is" ;;
    *) echo "restored from $backup" ;;
  esac
}
undo() {
  restore; hup
  echo "$1; $conf $(was)" >&2
  exit 3
}

hup || undo "cannot signal dockerd to reload (no dockerd process found)"
wanted=$(sed -n 's/^ *"live-restore": *\(true\|false\).*/\1/p' "$conf")
i=0; state=
while [ "$i" -lt 20 ]; do
  state=$(answers 10) || undo "the engine stopped answering after the reload"
  [ "${state%% *}" = "${wanted:-${state%% *}}" ] && break
  sleep 0.5; i=$((i + 1))
done
[ "$restart" = yes ] || exit 0
if [ "${state%% *}" != true ] && [ "${state#* }" != 0 ]; then
  undo "live-restore is off and ${state#* } containers run: a restart would stop them"
fi
engine restart >/dev/null 2>&1 || [ "$manager" != none ] ||
  undo "nothing manages the engine here (no systemd unit, no init script): fleet cannot restart it"
if ! answers "$wait" >/dev/null; then
  restore
  engine restart >/dev/null 2>&1
  answers "$wait" >/dev/null
  echo "the engine did not come back after the restart with the new $conf; $conf $(was), and the engine restarted with it" >&2
  exit 3
fi
