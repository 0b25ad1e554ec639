#!/usr/bin/env python3
"""Pushes a set of small images to an OCI registry, and deletes some of them again.

Used by scripts/bench-gc.sh to give quay-server and Debian's docker-registry the same image
set. Every image is one layer (random bytes) and one config, both unique to the image, so an
image whose manifest is gone leaves two garbage blobs. Blobs go up as the spec's two-step
monolithic upload (POST, then PUT with the body and ?digest=), which every registry accepts.
Only the standard library: threads, one kept-alive connection per thread.

    gc-images.py push   URL REPOS IMAGES LAYER_BYTES THREADS SEED
    gc-images.py delete URL REPOS IMAGES LAYER_BYTES THREADS SEED by-tag|by-digest

`push` pushes IMAGES images spread over REPOS repositories (tag `t<i>` in `bench/r<i % REPOS>`);
`delete` deletes every second image (odd i): by tag (Quay's time machine keeps the manifest as
history; it becomes garbage when the window ends) or by digest (what CNCF Distribution needs
before its garbage-collect). SEED makes the layers reproducible, so both registries get the
same bytes.
"""

import hashlib
import http.client
import json
import random
import sys
import threading
import urllib.parse

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def image(i, layer_bytes, seed):
    """(layer, config, manifest) bytes of image i."""
    rng = random.Random(seed * 1_000_003 + i)
    layer = rng.randbytes(layer_bytes)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        separators=(",", ":"),
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    return layer, config, manifest


class Client:
    """One kept-alive HTTP connection to the registry."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def request(self, method, path, body=None, headers=None):
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, resp.getheader("Location"), data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def push_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, location, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202 or not location:
            raise RuntimeError(f"POST upload in {repo}: {status} {body[:200]!r}")
        u = urllib.parse.urlsplit(location)
        sep = "&" if u.query else "?"
        path = (u.path + ("?" + u.query if u.query else "")) + f"{sep}digest={digest}"
        status, _, body = self.request(
            "PUT", path, data, {"Content-Type": "application/octet-stream"}
        )
        if status != 201:
            raise RuntimeError(f"PUT blob in {repo}: {status} {body[:200]!r}")

    def push_manifest(self, repo, tag, manifest):
        status, _, body = self.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": MANIFEST}
        )
        if status != 201:
            raise RuntimeError(f"PUT manifest {repo}:{tag}: {status} {body[:200]!r}")

    def delete(self, repo, reference):
        status, _, body = self.request("DELETE", f"/v2/{repo}/manifests/{reference}")
        if status not in (200, 202):
            raise RuntimeError(f"DELETE {repo}:{reference}: {status} {body[:200]!r}")


def run(threads, items, work):
    """Runs work(client, item) over items on `threads` threads; raises the first failure."""
    errors = []
    lock = threading.Lock()
    it = iter(items)

    def loop():
        client = Client(URL)
        while not errors:
            with lock:
                item = next(it, None)
            if item is None:
                return
            try:
                work(client, item)
            except Exception as e:  # reported once, below
                errors.append(e)

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def main():
    global URL
    cmd, URL = sys.argv[1], sys.argv[2].rstrip("/")
    repos, images, layer_bytes, threads, seed = (int(a) for a in sys.argv[3:8])

    def names(i):
        return f"bench/r{i % repos}", f"t{i}"

    if cmd == "push":

        def push(client, i):
            repo, tag = names(i)
            layer, config, manifest = image(i, layer_bytes, seed)
            client.push_blob(repo, layer)
            client.push_blob(repo, config)
            client.push_manifest(repo, tag, manifest)

        run(threads, range(images), push)
    elif cmd == "delete":
        by = sys.argv[8]

        def delete(client, i):
            repo, tag = names(i)
            if by == "by-tag":
                client.delete(repo, tag)
            else:
                manifest = image(i, layer_bytes, seed)[2]
                client.delete(repo, "sha256:" + hashlib.sha256(manifest).hexdigest())

        run(threads, range(1, images, 2), delete)
    else:
        sys.exit(f"unknown command {cmd}")


URL = ""
if __name__ == "__main__":
    main()
