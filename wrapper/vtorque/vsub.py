"""Placeholder entry point; replaced when its issue lands."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(usage="vsub [qsub options] [-vm key=value[,key=value...]]... [script]")
    parser.parse_known_args(argv)
    print("not implemented yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
