# SPDX-License-Identifier: MIT
"""A Python HTTPS client for the shim tests: urllib over the ssl module, trusting a test CA,
with the URL's host pointed at a loopback address (SNI and Host stay the URL's).

    /usr/bin/python3 urllib_client.py --ca CA [--addr 127.0.0.1] [-X METHOD]
        [-d DATA | -s SIZE] [-A AUTH | -A -] URL...

Output per URL, like the C clients: "sent LEN SHA256", "status N", then the body. An HTTP
error status (e.g. a 403 from deputy) is a response like any other; exit 0 when every URL
got a response, 2 otherwise.
"""
import argparse
import os
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deputytest import SERVICE_ACCOUNT, pattern, sha256, urllib_opener  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ca', required=True)
    ap.add_argument('--addr', default='127.0.0.1')
    ap.add_argument('-X', dest='method')
    ap.add_argument('-d', dest='data')
    ap.add_argument('-s', dest='size', type=int)
    ap.add_argument('-A', dest='auth', default=SERVICE_ACCOUNT)
    ap.add_argument('urls', nargs='+')
    a = ap.parse_args()
    body = a.data.encode() if a.data is not None else pattern(a.size) if a.size else None
    opener = urllib_opener(a.ca, a.addr)
    rc = 0
    for url in a.urls:
        req = urllib.request.Request(url, data=body, method=a.method)
        if a.auth != '-':
            req.add_header('Authorization', a.auth)
        if body is not None:
            req.add_header('Content-Type', 'application/octet-stream')
        print('sent %d %s' % (len(body or b''), sha256(body or b'')))
        try:
            with opener.open(req, timeout=60) as resp:
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        except OSError as e:
            print('error %s' % e)
            rc = 2
            continue
        print('status %d' % status)
        sys.stdout.write(data.decode(errors='replace'))
        if not data.endswith(b'\n'):
            print()
        sys.stdout.flush()
    return rc


if __name__ == '__main__':
    sys.exit(main())
