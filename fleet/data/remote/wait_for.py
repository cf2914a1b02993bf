# fleet's wait_for, run on a host: wait until a path exists (or is gone), or a TCP port
# accepts connections (or stops), as Ansible's wait_for module waits.
#
#   wait_for.py KIND TARGET STATE TIMEOUT DELAY SLEEP SEARCH
#       KIND: path | port | none; TARGET: the path, or HOST:PORT; STATE: present/started,
#       absent/stopped; SEARCH: a regular expression the file must hold ('' for none)
#
# Prints one JSON line ({"elapsed": seconds, "match": text}); exit 0 when the condition
# held, 1 at the timeout. Standard library only, for any python3 >= 3.6, run isolated.
import json, os, re, socket, sys, time


def holds(kind, target, state, search):
    if kind == "path":
        if state in ("absent", "stopped"):
            return not os.path.exists(target), None
        if not os.path.exists(target):
            return False, None
        if not search:
            return True, None
        try:
            with open(target, "r", errors="replace") as f:
                found = re.search(search, f.read(), re.M)
        except OSError:
            return False, None
        return found is not None, found.group(0) if found else None
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            reachable = True
    except OSError:
        reachable = False
    return reachable == (state not in ("absent", "stopped")), None


def main(argv):
    kind, target, state, timeout, delay, pause, search = argv
    started = time.monotonic()
    time.sleep(float(delay))
    deadline = started + float(timeout)
    while True:
        if kind == "none":
            time.sleep(max(0.0, deadline - time.monotonic()))
            ok, match = True, None
        else:
            ok, match = holds(kind, target, state, search)
        if ok or time.monotonic() >= deadline:
            print(json.dumps({"elapsed": round(time.monotonic() - started), "match": match}))
            return 0 if ok else 1
        time.sleep(min(float(pause), max(0.0, deadline - time.monotonic())))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
