# TEMPORARY while modules move into fleet/ssh (issue 17): removed before this lands.
# ruff: noqa
from fleet.ssh.base import CommandResult as CommandResult
from fleet.ssh.base import Transport as Transport
from fleet.ssh.endpoint import Endpoint as Endpoint
from fleet.ssh.known_hosts import KnownHosts as KnownHosts
from fleet.ssh.known_hosts import fingerprint as fingerprint
from fleet.ssh.paramiko_client import *  # noqa: F403
from fleet.ssh.paramiko_client import FOLLOW_STOPPED as FOLLOW_STOPPED
