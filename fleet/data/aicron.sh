#!/bin/sh
# aicron.sh: keeps this host's pretrained-weights HTTP service up; cron runs it.
#
# Installed by 'fleet provision' from fleet/data/aicron.sh in the fleet repository, with the
# settings below filled in from the inventory (fleet_provision). Local edits are replaced
# on the next provision: change the template or the settings instead.
# Cron runs it as root from a root-owned directory (SELF below), never from the data root:
# every framework container can write the data root, which holds only a copy to read.
#
# What one run does, and logs with a timestamp:
#   - the service answers HTTP on its URL     -> nothing to do (logged as such)
#   - it does not                             -> start it, detached: a static HTTP
#     server of WEIGHTS_DIR (python3's http.server, below), as WEIGHTS_USER when run as
#     root, then wait until it answers. Every framework container can write the data
#     root, so the server follows no link there: it opens DATA_ROOT once, walks to
#     WEIGHTS_DIR and to each requested file one component at a time without following
#     links (O_NOFOLLOW), and serves what it opened; a link is a 404.
# Runs are serialised with flock on this file (a second run waits up to 30 s, then finds
# the service up), so cron and a person may run it at the same time. Exit 0 when the
# service answers at the end, 1 otherwise. It runs from / and starts python3 isolated (-I:
# no current directory, user site or PYTHON* variables on its import path), so nothing
# where cron or a person started it is imported as root.

# -- settings (filled in by fleet provision; every value is shell-quoted) --
SELF=__FLEET_SELF__
DATA_ROOT=__FLEET_DATA_ROOT__
WEIGHTS_DIR=__FLEET_WEIGHTS_DIR__
WEIGHTS_PORT=__FLEET_WEIGHTS_PORT__
WEIGHTS_BIND=__FLEET_WEIGHTS_BIND__
WEIGHTS_USER=__FLEET_WEIGHTS_USER__
URL=__FLEET_URL__
LOG=__FLEET_LOG__
PID_FILE=__FLEET_PID_FILE__
# -- end of settings --

set -u
cd / || exit 1
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
LC_ALL=C
export LC_ALL
SERVICE_LOG="$LOG.weights"
LOG_MAX_BYTES=1048576

log() {
    line="$(date '+%Y-%m-%dT%H:%M:%S%z') aicron[$$]: $*"
    printf '%s\n' "$line" >>"$LOG"
    printf '%s\n' "$line"
}

# True when something answers HTTP on $URL (any status: an error page is an answer).
answers() {
    python3 -I -c '
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    opener.open(sys.argv[1], timeout=5).close()
except urllib.error.HTTPError:
    pass
except Exception as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
' "$URL"
}

# Keep a log under LOG_MAX_BYTES: its content moves to FILE.1. Truncating in place (not
# renaming) also works for the service's log, which the running server holds open.
bound() {
    [ -f "$1" ] || return 0
    size=$(wc -c <"$1")
    [ "$size" -gt "$LOG_MAX_BYTES" ] || return 0
    cp -f "$1" "$1.1" && : >"$1"
}

# The weights server: argv PORT BIND DATA_ROOT WEIGHTS_DIR. (No single quote inside.)
WEIGHTS_SERVER='
import http.server, os, socket, stat, sys, urllib.parse
port, bind, root, weights = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def walk(fd, parts):
    """A new descriptor of fd/parts, or OSError at a link (ELOOP) or a missing part."""
    fd = os.dup(fd)
    for part in parts:
        try:
            child = os.open(part, NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
below = os.path.relpath(weights, root)
top = walk(top, [] if below == "." else below.split("/"))
if not stat.S_ISDIR(os.fstat(top).st_mode):
    sys.exit("%s is not a directory" % weights)


class Handler(http.server.SimpleHTTPRequestHandler):
    def send_head(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [part for part in path.split("/") if part]
        if any(part in (".", "..") for part in parts):
            self.send_error(404, "File not found")
            return None
        try:
            fd = walk(top, parts)
        except OSError:
            self.send_error(404, "File not found")
            return None
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            try:
                if not path.endswith("/"):
                    self.send_response(301)
                    self.send_header("Location", urllib.parse.quote(path) + "/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                # The directory this request opened, not whatever its name holds now.
                return self.list_directory("/proc/self/fd/%d" % fd)
            finally:
                os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            self.send_error(404, "File not found")
            return None
        served = os.fdopen(fd, "rb")
        self.send_response(200)
        self.send_header("Content-type", self.guess_type(path))
        self.send_header("Content-Length", str(info.st_size))
        self.send_header("Last-Modified", self.date_time_string(int(info.st_mtime)))
        self.end_headers()
        return served


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.getaddrinfo(bind, port, 0, socket.SOCK_STREAM)[0][0]


Server((bind, port), Handler).serve_forever()
'

# One run at a time: the lock is on this script (opened read-only: nothing is created).
exec 9<"$SELF" || exit 1
if ! flock -w 30 9; then
    log "ERROR: another aicron.sh held the lock for 30 s; giving up"
    exit 1
fi
bound "$LOG"
bound "$SERVICE_LOG"
exec 2>>"$LOG"

if answers 2>/dev/null; then
    log "weights service answers on $URL: nothing to do"
    exit 0
fi
if [ ! -d "$WEIGHTS_DIR" ]; then
    log "ERROR: $WEIGHTS_DIR does not exist; run 'fleet provision' for this host"
    exit 1
fi

log "weights service does not answer on $URL: starting it"
if [ "$(id -u)" = 0 ] && [ -n "$WEIGHTS_USER" ]; then
    if ! uid=$(id -u "$WEIGHTS_USER") || ! gid=$(id -g "$WEIGHTS_USER"); then
        log "ERROR: user $WEIGHTS_USER does not exist"
        exit 1
    fi
    set -- setpriv --reuid="$uid" --regid="$gid" --clear-groups --
else
    set --
fi
# Detached from this run: own session, no terminal, none of this script's descriptors
# (the lock on fd 9 must not outlive the run).
setsid nohup "$@" python3 -I -c "$WEIGHTS_SERVER" "$WEIGHTS_PORT" "$WEIGHTS_BIND" \
    "$DATA_ROOT" "$WEIGHTS_DIR" </dev/null >>"$SERVICE_LOG" 2>&1 9<&- &
pid=$!
printf '%s\n' "$pid" >"$PID_FILE" 2>/dev/null || log "warning: cannot write $PID_FILE"

tries=0
while [ "$tries" -lt 50 ]; do
    if answers 2>/dev/null; then
        log "started the weights service (pid $pid): $WEIGHTS_DIR on $WEIGHTS_BIND:$WEIGHTS_PORT"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
    tries=$((tries + 1))
done
log "ERROR: the weights service did not come up on $URL; last lines of $SERVICE_LOG:"
tail -n 5 "$SERVICE_LOG" | while IFS= read -r line; do log "  $line"; done
exit 1
