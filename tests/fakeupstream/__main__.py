"""This module provides the command line: `python -m tests.fakeupstream --port 0 --port-file PATH`."""
import argparse
import asyncio

from .server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeupstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see --port-file)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--log-body-max", type=int, default=1024 * 1024,
                        help="request bodies longer than this are logged truncated (length + sha256 stay exact)")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port, args.port_file, args.log_body_max))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
