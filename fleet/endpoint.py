# TEMPORARY while modules move into fleet/ssh (issue 17): removed before this lands.
# ruff: noqa
from fleet.ssh.endpoint import *  # noqa: F403
