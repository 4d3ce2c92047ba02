"""`vtorque config check [PATH]` and `vtorque config show [--path PATH]`."""

import argparse
import os
import sys

from vtorque.errors import ConfigError
from vtorque.site.config import as_dict, config_path, load_config


def main(argv, prog="vtorque config"):
    parser = argparse.ArgumentParser(prog=prog, description="Check or show the vTorque site config.")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate a config file: exit 0, or 1 listing every bad key")
    check.add_argument(
        "path", nargs="?", help="file to check (default: $VTORQUE_CONFIG or /etc/vtorque/vtorque.yml)"
    )
    show = sub.add_parser("show", help="print the effective config with defaults (users see their part)")
    show.add_argument("--path", help="config file (default: $VTORQUE_CONFIG or /etc/vtorque/vtorque.yml)")
    args = parser.parse_args(argv)

    if args.action == "check":
        try:
            config = load_config(args.path)
        except ConfigError as err:
            print(err, file=sys.stderr)
            return 1
        from vtorque import scheduler

        problems = scheduler.for_config(config).command_problems()
        if problems:
            print(ConfigError(config.source, problems), file=sys.stderr)
            return 1
        print(f"{config_path(args.path)}: OK")
        return 0

    import yaml

    config = load_config(args.path)
    data = as_dict(config, user_view=os.geteuid() != 0)
    sys.stdout.write(f"# {config.source}\n")
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return 0
