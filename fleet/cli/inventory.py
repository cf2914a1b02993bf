"""``fleet inventory --list | --graph | --list-hosts PATTERN``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fleet.cli import common
from fleet.escape import visible


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inventory", help="show the inventory (as ansible-inventory does)"
    )
    common.add_inventory_option(parser)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--list", action="store_true", help="JSON in ansible-inventory --list's shape"
    )
    what.add_argument(
        "--graph", nargs="?", const="all", metavar="GROUP", help="a tree of groups and hosts"
    )
    what.add_argument(
        "--list-hosts", metavar="PATTERN", help="the hosts PATTERN selects, one per line"
    )
    what.add_argument("--host", metavar="HOST", help="one host's variables as JSON")
    parser.add_argument("-l", "--limit", metavar="PATTERN", help="further limit --list-hosts")
    parser.set_defaults(handler=_inventory)


def _inventory(args: argparse.Namespace) -> int:
    inv = common.load_inventory(args)
    for warning in inv.warnings:
        print(f"fleet: warning: {visible(warning, lines=True)}", file=sys.stderr)
    if args.list:
        json.dump(inv.to_ansible_list(), sys.stdout, indent=4, sort_keys=True, default=str)
        sys.stdout.write("\n")
    elif args.graph:
        sys.stdout.write(visible(inv.graph(args.graph).rstrip("\n"), lines=True) + "\n")
    elif args.host:
        json.dump(dict(inv.host(args.host).vars), sys.stdout, indent=4, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        for host in inv.select(args.list_hosts, args.limit):
            print(visible(host.name))
    return 0
