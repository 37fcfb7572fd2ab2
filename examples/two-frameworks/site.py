"""One framework site's node in a deployment: the Keras client at site-x, the PyTorch client
at site-y. (site-z runs entente's own node: `entente join federation.toml --site site-z`.)

    python site.py site-x --coordinator https://HOST:7443 --keys keys
"""

from __future__ import annotations

import argparse

import entente
from clients import KerasClient, TorchClient
from common import HERE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", choices=["site-x", "site-y"])
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--keys", default=str(HERE / "keys"))
    parser.add_argument("--manifest", default=str(HERE / "federation.toml"))
    args = parser.parse_args()
    client = KerasClient(args.site) if args.site == "site-x" else TorchClient(args.site)
    rounds = entente.join(
        args.manifest, site=args.site, coordinator=args.coordinator, keys=args.keys, client=client
    )
    print(f"{args.site}: the run is finished after {rounds} rounds")


if __name__ == "__main__":
    main()
