
# fleet's one way to change files and directories on a host as root where others (every
# framework container, in the data root) may write: never by name. It opens ROOT as the
# admin made it (links followed: a data root may be a link to a bigger disk), then walks
# to the target one component at a time with directory descriptors and O_NOFOLLOW, so a
# symbolic link at any component below ROOT is refused, not followed. What it creates it
# creates with O_EXCL beside the target and changes through its open descriptor (fchown,
# fchmod), then renames into place (a link at the target is replaced, never written
# through); a directory is changed through its own descriptor.
#
#   safe_path.py write ROOT PATH MODE EXPECTED OWNER   (stdin: the content)
#       EXPECTED: "absent", the sha256 of the file there now, or "any"; OWNER: "u:g"
#       (names or ids) or "-" to leave the file the caller's
#   safe_path.py dir ROOT PATH MODE OWNER CREATE       (MODE/OWNER "-": leave; CREATE 0|1,
#       or 2: the directories made on the way get MODE and OWNER too)
#   safe_path.py fix ROOT PATH MODE OWNER              (a regular file's mode and owner)
#   safe_path.py stat ROOT PATH CONTENT                (CONTENT 0|1) -> one JSON line
#   safe_path.py touch ROOT PATH MODE OWNER            (create empty, or update the times)
#   safe_path.py remove ROOT PATH                      (a file, a link, or a whole tree)
#   safe_path.py link ROOT PATH TARGET                 (PATH a symbolic link to TARGET)
#   safe_path.py tree ROOT PATH MODE USER GROUP CHECK  (everything below directory PATH:
#       directories and regular files get MODE, USER, GROUP ("-": leave), a link its
#       USER and GROUP, never its target's; CHECK 1: change nothing) -> one JSON line
#
# Exit 0: done; 3: refused (a link below ROOT, the file changed since it was read), with
# the reason on stderr; 1: any other error. Standard library only, for any python3 >= 3.6
# (no f-strings), run isolated (python3 -I).
import contextlib, errno, grp, hashlib, json, os, pwd, stat, sys

KINDS = (
    (stat.S_ISREG, "regular file"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character special file"),
    (stat.S_ISBLK, "block special file"),
)


class Refused(Exception):
    pass


def kind_of(st):
    for test, name in KINDS:
        if test(st.st_mode):
            if name == "regular file" and st.st_size == 0:
                return "regular empty file"
            return name
    return "unknown"


def parts_below(root, path):
    root = root.rstrip("/") or "/"
    if path == root:
        return []
    prefix = root if root == "/" else root + "/"
    if not path.startswith(prefix):
        raise Refused("%s is not in %s" % (path, root))
    parts = path[len(prefix):].split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Refused("%s: write it normalised (no '.', '..' or '//')" % path)
    return parts


def open_dir(at, name, shown, root):
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(name, flags, dir_fd=at)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                is_link = stat.S_ISLNK(os.stat(name, dir_fd=at, follow_symlinks=False).st_mode)
            except OSError:
                is_link = False
            if is_link:
                raise Refused(
                    "%s is a symbolic link below %s: fleet follows no link there (a container "
                    "may have planted it); remove it, or make it a directory" % (shown, root)
                ) from None
            raise Refused("%s is not a directory" % shown) from None
        raise


def make_root(root, made):
    """os.makedirs(ROOT), each directory it creates given to MADE (its descriptor)."""
    if os.path.isdir(root):
        return
    parent = os.path.dirname(root.rstrip("/"))
    if parent and parent != root.rstrip("/"):
        make_root(parent, made)
    try:
        os.mkdir(root, 0o755)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
        return
    if made is not None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        try:
            made(fd)
        finally:
            os.close(fd)


def walk(root, path, create=False, made=None):
    """A descriptor of directory PATH, reached from ROOT without following any link;
    with CREATE, missing directories are made (and each given to MADE, if any)."""
    if create:
        make_root(root, made)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    shown = root.rstrip("/")
    for part in parts_below(root, path):
        shown = shown + "/" + part
        created = False
        if create:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                created = True
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    os.close(fd)
                    raise
        try:
            child = open_dir(fd, part, shown, root)
        finally:
            os.close(fd)
        fd = child
        if created and made is not None:
            made(fd)
    return fd


def split(path):
    parent, _, name = path.rpartition("/")
    if not name or name in (".", ".."):
        raise Refused("%s does not name a file" % path)
    return parent or "/", name


def ids(owner):
    """(uid, gid) of "user:group"; an empty part is -1 (left as it is)."""
    user, _, group = owner.partition(":")
    uid = -1 if not user else int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    if not group:
        return uid, -1
    return uid, int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def open_file(at, name):
    """A descriptor of regular file NAME in AT (None when absent); never through a link."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, dir_fd=at)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            return -1
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return -1
    return fd


def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def write(root, path, mode, expected, owner):
    parent, name = split(path)
    at = walk(root, parent)
    if expected != "any":
        fd = open_file(at, name)
        if expected == "absent":
            try:
                os.stat(name, dir_fd=at, follow_symlinks=False)
                there = True
            except OSError:
                there = False
            if there:
                raise Refused("%s appeared since its facts were read; rerun" % path)
        elif fd is None or fd < 0 or hashlib.sha256(read_all(fd)).hexdigest() != expected:
            raise Refused("%s changed since its facts were read; rerun" % path)
        if fd is not None and fd >= 0:
            os.close(fd)
    content = sys.stdin.buffer.read()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    temp = None
    for _ in range(100):
        candidate = ".%s.fleet-%s" % (name, os.urandom(6).hex())
        try:
            fd = os.open(candidate, flags, 0o600, dir_fd=at)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise
        temp = candidate
        break
    if temp is None:
        raise Refused("could not create a temporary file beside %s" % path)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        if owner != "-":
            uid, gid = ids(owner)
            os.fchown(fd, uid, gid)
        os.fchmod(fd, int(mode, 8))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        # The name may have been swapped meanwhile by whoever can write the directory:
        # the rename moves whatever it holds, which they could have put there anyway.
        os.rename(temp, name, src_dir_fd=at, dst_dir_fd=at)
        temp = None
    finally:
        if fd >= 0:
            os.close(fd)
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=at)


def make_dir(root, path, mode, owner, create):
    def shape(fd):
        if owner != "-":
            uid, gid = ids(owner)
            os.fchown(fd, uid, gid)
        if mode != "-":
            os.fchmod(fd, int(mode, 8))

    # CREATE 2: the directories made on the way get the mode and owner too (Ansible's file).
    fd = walk(root, path, create=create in ("1", "2"), made=shape if create == "2" else None)
    try:
        shape(fd)
    finally:
        os.close(fd)


def fix_file(root, path, mode, owner):
    parent, name = split(path)
    at = walk(root, parent)
    fd = open_file(at, name)
    if fd is None or fd < 0:
        raise Refused("%s is not a regular file (a link, or gone?); nothing changed" % path)
    try:
        if owner != "-":
            uid, gid = ids(owner)
            os.fchown(fd, uid, gid)
        os.fchmod(fd, int(mode, 8))
    finally:
        os.close(fd)


def touch(root, path, mode, owner):
    parent, name = split(path)
    at = walk(root, parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, 0o600, dir_fd=at)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("%s is a symbolic link: fleet touches no link's target" % path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused("%s is not a regular file" % path)
        os.utime(fd)
        if owner != "-":
            uid, gid = ids(owner)
            os.fchown(fd, uid, gid)
        if mode != "-":
            os.fchmod(fd, int(mode, 8))
    finally:
        os.close(fd)


def remove_tree(at, name):
    """Remove NAME in directory AT: a file or link unlinked, a directory emptied through
    its own descriptor first (never following a link inside it)."""
    try:
        os.unlink(name, dir_fd=at)
        return
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        if exc.errno not in (errno.EISDIR, errno.EPERM):
            raise
    fd = open_dir(at, name, name, "the tree")
    try:
        for entry in os.listdir(fd):
            remove_tree(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=at)


def remove(root, path):
    parent, name = split(path)
    if path.rstrip("/") == root.rstrip("/"):
        raise Refused("%s is a root fleet walks from: it removes what is below it only" % path)
    try:
        at = walk(root, parent)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise
    try:
        remove_tree(at, name)
    finally:
        os.close(at)


def link(root, path, target):
    parent, name = split(path)
    at = walk(root, parent)
    try:
        for _ in range(100):
            temp = ".%s.fleet-%s" % (name, os.urandom(6).hex())
            try:
                os.symlink(target, temp, dir_fd=at)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    continue
                raise
            try:
                os.rename(temp, name, src_dir_fd=at, dst_dir_fd=at)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=at)
                raise
            return
        raise Refused("could not create a temporary link beside %s" % path)
    finally:
        os.close(at)


def describe(root, path, content):
    parent, name = split(path) if path != root.rstrip("/") else (path, None)
    try:
        at = walk(root, parent)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return {"kind": "absent"}
        raise
    try:
        st = os.stat(name, dir_fd=at, follow_symlinks=False) if name else os.fstat(at)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return {"kind": "absent"}
        raise
    found = {"kind": kind_of(st), "mode": "%o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid,
             "gid": st.st_gid, "user": name_of(pwd.getpwuid, st.st_uid),
             "group": name_of(grp.getgrgid, st.st_gid)}
    if stat.S_ISLNK(st.st_mode):
        found["target"] = os.readlink(name, dir_fd=at)
    if content == "1" and name and stat.S_ISREG(st.st_mode):
        fd = open_file(at, name)
        if fd is not None and fd >= 0:
            data = read_all(fd)
            os.close(fd)
            found["content"] = data.hex()
    return found


def shape_tree(root, path, mode, user, group, check):
    """Ansible's file recurse, below directory PATH and never through a link; the count of
    entries that changed (or would)."""
    # "-" leaves a part as it is, as an empty part of "user:group" does.
    uid, gid = ids(("" if user == "-" else user) + ":" + ("" if group == "-" else group))
    bits = None if mode == "-" else int(mode, 8)
    changed = [0]

    def owner_differs(st):
        return (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)

    def fix(fd, st):
        wants_mode = bits is not None and stat.S_IMODE(st.st_mode) != bits
        wants_owner = owner_differs(st)
        if not (wants_mode or wants_owner):
            return
        changed[0] += 1
        if check == "1":
            return
        if wants_owner:
            os.fchown(fd, uid, gid)
        if wants_mode:
            os.fchmod(fd, bits)

    def below(at):
        for name in sorted(os.listdir(at)):
            st = os.stat(name, dir_fd=at, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                # A link's own owner; its mode means nothing, its target is never touched.
                if owner_differs(st):
                    changed[0] += 1
                    if check != "1":
                        os.chown(name, uid, gid, dir_fd=at, follow_symlinks=False)
            elif stat.S_ISDIR(st.st_mode):
                fd = open_dir(at, name, name, root)
                try:
                    below(fd)
                    fix(fd, os.fstat(fd))
                finally:
                    os.close(fd)
            elif stat.S_ISREG(st.st_mode):
                fd = open_file(at, name)
                if fd is None or fd < 0:
                    continue  # gone, or swapped for something else since the listing
                try:
                    fix(fd, os.fstat(fd))
                finally:
                    os.close(fd)

    fd = walk(root, path)
    try:
        below(fd)
    finally:
        os.close(fd)
    return {"changed": changed[0]}


def name_of(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def main(argv):
    op = argv[0] if argv else ""
    if op == "write" and len(argv) == 6:
        write(*argv[1:])
    elif op == "dir" and len(argv) == 6:
        make_dir(*argv[1:])
    elif op == "fix" and len(argv) == 5:
        fix_file(*argv[1:])
    elif op == "stat" and len(argv) == 4:
        print(json.dumps(describe(*argv[1:])))
    elif op == "touch" and len(argv) == 5:
        touch(*argv[1:])
    elif op == "remove" and len(argv) == 3:
        remove(*argv[1:])
    elif op == "link" and len(argv) == 4:
        link(*argv[1:])
    elif op == "tree" and len(argv) == 7:
        print(json.dumps(shape_tree(*argv[1:])))
    else:
        sys.stderr.write("fleet: usage: safe_path.py write|dir|fix|stat|touch|remove|link|tree ROOT PATH ...\n")
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Refused as exc:
        sys.stderr.write("fleet: %s\n" % exc)
        sys.exit(3)
    except (OSError, KeyError, ValueError) as exc:
        sys.stderr.write("fleet: %s\n" % exc)
        sys.exit(1)
