#!/usr/bin/env python3
"""Bearer tokens for benchmarking switchboard with access control on.

Writes into DIR: `tokens` (COUNT tokens, one subject each, every scope, an
hour to live), the key switchboard verifies them with (`secret` for HS256,
`jwks.json` for RS256, the test key rsa-1), and `switchboard`, a wrapper
that runs BINARY with that key configured: a build for compare.py. Send
the tokens with load.lua's TOKENS=DIR/tokens (each request one at random,
so the rate limiter sees COUNT subjects, as it sees many addresses
without them).

  python3 benches/tokens.py --alg rs256 /tmp/rs256 target/release/switchboard
  TOKENS=/tmp/rs256/tokens python3 benches/compare.py --backend sqlite \\
      --scenario get target/release/switchboard /tmp/rs256/switchboard

RS256 signing needs Python's `cryptography` package.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import stat
import time

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "auth")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alg", choices=["hs256", "rs256"], default="hs256")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("dir")
    parser.add_argument("binary")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    if args.alg == "hs256":
        secret = secrets.token_hex(32).encode()
        key_file = os.path.join(args.dir, "secret")
        with open(key_file, "wb") as out:
            out.write(secret)
        header = {"alg": "HS256", "typ": "JWT"}
        sign = lambda message: hmac.new(secret, message, hashlib.sha256).digest()
        setting = "SWITCHBOARD_AUTH_JWT_SECRET_FILE"
    else:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
        with open(os.path.join(FIXTURES, "rsa-1.der"), "rb") as der:
            private = serialization.load_der_private_key(der.read(), None)
        key_file = os.path.join(args.dir, "jwks.json")
        shutil.copy(os.path.join(FIXTURES, "jwks.json"), key_file)
        header = {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}
        sign = lambda message: private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        setting = "SWITCHBOARD_AUTH_JWKS_FILE"
    encoded_header = b64(json.dumps(header).encode())
    expires = int(time.time()) + 3600
    with open(os.path.join(args.dir, "tokens"), "w") as out:
        for n in range(args.count):
            claims = {"sub": f"bench-{n}", "exp": expires,
                      "scope": "users:read users:write fetch admin"}
            message = f"{encoded_header}.{b64(json.dumps(claims).encode())}"
            out.write(f"{message}.{b64(sign(message.encode()))}\n")
    wrapper = os.path.join(args.dir, "switchboard")
    with open(wrapper, "w") as out:
        out.write(f"#!/bin/sh\n{setting}={os.path.abspath(key_file)} exec {os.path.abspath(args.binary)} \"$@\"\n")
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    print(f"{args.count} {args.alg} tokens in {args.dir}/tokens; build: {wrapper}")


if __name__ == "__main__":
    main()
