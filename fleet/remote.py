# TEMPORARY while modules move into fleet/ssh (issue 17): removed before this lands.
# ruff: noqa
from fleet.ssh.base import *  # noqa: F403
from fleet.ssh.base import fix_for as fix_for
