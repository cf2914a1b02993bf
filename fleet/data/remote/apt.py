# fleet's apt, run on a host: packages installed, upgraded or removed, and apt's cache
# updated, as Ansible's apt module does it (apt-get with dpkg's confdef/confold, the
# packages fleet names only, marked manually installed; check mode simulates).
#
#   apt.py STATE UPDATE VALID RECOMMENDS PURGE AUTOREMOVE CHECK LOCK [PACKAGE...]
#       STATE: present | latest | absent; UPDATE: yes | no (update the cache first);
#       VALID: seconds the cache stays valid (0: always update); RECOMMENDS: yes | no | -
#       (apt's own default); PURGE, AUTOREMOVE, CHECK: yes | no; LOCK: seconds to wait for
#       the dpkg lock. Package names are checked by fleet (no option, no blank).
#
# Prints one JSON line: changed, cache_updated, cache_update_time, and when apt ran:
# stdout, stderr (and msg, rc on failure). Exit 0, or 1 when apt failed.
# Standard library only, for any python3 >= 3.6, run isolated.
import json, os, subprocess, sys, time

STAMPS = ("/var/lib/apt/periodic/update-success-stamp", "/var/lib/apt/lists")
ENV = dict(
    os.environ,
    DEBIAN_FRONTEND="noninteractive",
    DEBIAN_PRIORITY="critical",
    LANG="C.UTF-8",
    LC_ALL="C.UTF-8",
    LC_MESSAGES="C.UTF-8",
)


def run(argv):
    done = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=ENV
    )
    return done.returncode, done.stdout, done.stderr


def cache_time():
    for path in STAMPS:
        if os.path.exists(path):
            return int(os.stat(path).st_mtime)
    return 0


def status(name):
    """(installed version or '', candidate version or '', config files only)."""
    code, out, _ = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", name])
    abbrev, _, version = out.partition("|") if code == 0 else ("", "", "")
    installed = version if abbrev.startswith("ii") else ""
    candidate = ""
    code, out, _ = run(["apt-cache", "policy", name])
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            candidate = line.split(":", 1)[1].strip()
            candidate = "" if candidate == "(none)" else candidate
    return installed, candidate, abbrev.startswith("rc")


def finish(result, code=0):
    print(json.dumps(result))
    sys.exit(code)


def main():
    state, update, valid, recommends, purge, autoremove, check, lock = sys.argv[1:9]
    packages = sys.argv[9:]
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=" + lock]
    result = {"changed": False, "cache_updated": False, "cache_update_time": cache_time()}
    if update == "yes":
        if int(valid) == 0 or result["cache_update_time"] + int(valid) < time.time():
            before = result["cache_update_time"]
            if check != "yes":
                code, out, err = run([*apt, "-q", "update"])
                if code != 0:
                    finish(dict(result, msg="Failed to update apt cache: " + err.strip(),
                                failed=True, rc=code), 1)
            result["cache_update_time"] = cache_time()
            result["cache_updated"] = check == "yes" or result["cache_update_time"] != before
        if not packages:
            result["changed"] = result["cache_updated"]
            finish(result)
    simulate = ["--simulate"] if check == "yes" else []
    if state == "absent":
        chosen = []
        for name in packages:
            installed, _, configs = status(name)
            if installed or (purge == "yes" and configs):
                chosen.append(name)
        if not chosen:
            finish(result)
        argv = apt + ["-q", "-y"] + (["--purge"] if purge == "yes" else [])
        argv += (["--auto-remove"] if autoremove == "yes" else []) + simulate + ["remove"]
    else:
        chosen = []
        for name in packages:
            installed, candidate, _ = status(name)
            if not installed and not candidate:
                finish(dict(result, msg="no available installation candidate for " + name,
                            failed=True), 1)
            if not installed or (state == "latest" and candidate and candidate != installed):
                chosen.append(name)
        if not chosen:
            if check != "yes":
                mark_manual(packages)
            finish(result)
        argv = [*apt, "-y", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
        argv += (["--auto-remove"] if autoremove == "yes" else []) + simulate + ["install"]
        if recommends != "-":
            argv += ["-o", "APT::Install-Recommends=" + recommends]
    code, out, err = run(argv + chosen)
    result.update(stdout=out, stderr=err)
    if code != 0:
        finish(dict(result, msg="'%s' failed: %s" % (" ".join(argv + chosen), err.strip()),
                    failed=True, rc=code), 1)
    if state != "absent" and check != "yes":
        mark_manual(packages)
    result["changed"] = True
    finish(result)


def mark_manual(packages):
    # As Ansible's apt: the packages a task names are the admin's, not dependencies.
    code, out, _ = run(["apt-mark", "showauto", *packages])
    auto = out.split() if code == 0 else []
    if auto:
        run(["apt-mark", "manual", *auto])


main()
