"""How fleet reaches a host: the only package that imports an SSH library.

- :mod:`fleet.ssh.base`: the :class:`~fleet.ssh.base.Transport` interface, its
  :class:`~fleet.ssh.base.CommandResult`, what a host may print, and the table of
  well-known failures and their fixes;
- :mod:`fleet.ssh.endpoint`: where and as whom to reach a host (no SSH library);
- :mod:`fleet.ssh.known_hosts`: host keys, verified per host;
- :mod:`fleet.ssh.paramiko_client`: fleet's own SSH client (streams, tunnels, TTYs);
- :mod:`fleet.ssh.openssh`: the system's OpenSSH client, for quick read-only fan-out.
"""
