#!/bin/sh
# The lab host's init script for its Docker engine (start, stop, restart, status), as a
# sysvinit server has one at /etc/init.d/docker. Debian's own raises limits that this
# machine does not grant to containers; this one starts dockerd as the lab's entrypoint
# does, and knows it by the pid file dockerd writes.
pidfile=/var/run/docker.pid
running() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
start() {
  running && return 0
  nohup dockerd >>/var/log/dockerd.log 2>&1 &
  i=0
  while [ "$i" -lt 600 ]; do
    docker version >/dev/null 2>&1 && return 0
    sleep 0.2; i=$((i + 1))
  done
  return 1
}
stop() {
  running || return 0
  kill "$(cat "$pidfile")"
  i=0
  while running && [ "$i" -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
  ! running
}
case $1 in
  start) start ;;
  stop) stop ;;
  restart) stop && start ;;
  status) running ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
