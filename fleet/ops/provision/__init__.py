"""``fleet provision``: make a fresh GPU server ready for the framework.

What a provisioned host has (every item is a setting of ``fleet_provision``, see
``inventory/group_vars/all.yml``):

- the shared data tree, ``/data/{checkpoints,datasets,pretrained_models,projects}``, with
  its owner, group and mode. Only the listed directories themselves are created, chowned
  or chmodded (never recursively): existing content is never touched or removed;
- ``/usr/local/lib/fleet/aicron.sh`` (:data:`SCRIPT_PATH`), rendered from the template
  ``fleet/data/aicron.sh``: it keeps the pretrained-weights HTTP service up (python3's
  ``http.server`` on ``weights_port``, serving ``/data/pretrained_models`` and following
  no link there) and logs what it
  did to ``/var/log/aicron.log``. ``<data_root>/aicron.sh`` is a copy of it for people to
  read (mode 0644, marked as a copy at its top); nothing runs it;
- a managed block in ``/etc/crontab`` that runs ``/usr/local/lib/fleet/aicron.sh`` on
  ``cron_schedule``;
- the weights service itself, answering (started by running ``aicron.sh`` once);
- an engine that answers and can run what the run spec (``fleet_run``) asks: the runtime,
  GPUs, ulimits; free disk at Docker's root and at the data root: the *preflight*;
- the base image (layers 1-2), shipped with :func:`fleet.ship.push`, so that a
  framework release then only sends its thin top layer.

Nothing a container can write is run by root. The framework's run command mounts the data
root read-write into a root container, so anything below it may have been written or
replaced by any framework image: the script cron runs lives in a root-owned directory
outside it (0755, not 0700, so that a non-root ``cron_user`` can read it; its content is no
secret, only who may change it matters), whose parents must be root's and not writable by
everyone (preflight). A hand-made cron line that runs ``<data_root>/aicron.sh`` fails the
host. ``log_file`` and ``cron_file`` below the data root are refused (root would write
through links planted there). Below the data root, fleet never follows a symbolic link:
directories are walked one component at a time and changed through the directory itself
(:data:`DIR_SCRIPT`), and files are written through a ``mktemp`` file (``O_EXCL``) in the
target's directory that is checked to be the file just made, then renamed over the target
(:data:`WRITE_SCRIPT`), so a link planted by a container redirects nothing.

The data root itself must be writable by its owner only: a ``mode`` that lets a group
(other than ``root``) or everyone write it is refused per host, unless
``allow_writable_data_root: true`` says that this is wanted (for example a lab group that
shares ``/data``). Subdirectories (``projects`` at ``2775`` for a lab group) are not
checked: they hold data, not what cron runs.

Design (pyinfra's): per host one round trip gathers every fact (:data:`FACTS_SCRIPT`, a
constant script that takes the settings as arguments; :func:`parse_facts` is pure). Pure
functions decide: :func:`fleet.ops.provision.preflight.preflight` (what stops the host; what only deserves a warning) and
:func:`plan` (a list of :class:`Change`: what, why, and the argv to run). Only the needed
changes run; then the facts are gathered again and the plan must be empty (the host
converged), else the host fails with what is still missing. Nothing to do is ``ok``.
``check`` stops after planning; ``diff`` adds unified diffs of the files to the details.
Files are written atomically (see above), their content sent on stdin, and refused when
the file changed since its facts were read.

Where the cron entry goes: ``/etc/crontab`` (setting ``cron_file``), because that is where
the lab's hosts carry the aicron entry today and where their admins look for it, and every
cron reads it; files in ``/etc/cron.d`` are silently ignored by Debian's cron when their name
has a dot or they are group/other writable, and a new ``/etc/cron.d/fleet`` beside an old
hand-made line in ``/etc/crontab`` would run the script twice unnoticed. Sharing the file
with its owner is safe: fleet only rewrites the lines between its markers (``# BEGIN fleet
aicron`` / ``# END fleet aicron``) and keeps every other byte; a hand-made aicron line
outside the block is never edited: it is a warning, or a failure when it runs the copy in
the data root. ``cron_file: /etc/cron.d/fleet``
works the same way for those who prefer it. A host provisioned before the script moved
(its block runs ``/data/aicron.sh``) converges on the next run: the block is rewritten to
the new path and ``/data/aicron.sh`` becomes the copy.

Errors: invalid settings raise :class:`ProvisionSettingsError` (an ``InputError``, exit 4)
before any host is touched; a host that fails its preflight or a change is ``failed`` with
the reason and the fix, and never stops the others.
"""
