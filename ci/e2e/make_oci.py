#!/usr/bin/env python3
"""Write a tiny OCI image layout (one tar layer, a config, a manifest) for ci/e2e-pull.sh.

Usage: make_oci.py DIR [TAG]

The image has one file, /e2e.txt; skopeo copies it with `oci:DIR:TAG`. Standard library only,
nothing is fetched.
"""

import hashlib
import io
import json
import os
import sys
import tarfile


def put_blob(layout, data):
    """Store `data` under blobs/sha256/ and return its descriptor digest and size."""
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def layer_tar():
    """One uncompressed tar with a single small file, with fixed metadata (reproducible)."""
    buf = io.BytesIO()
    content = b"accel-dns e2e pull\n"
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("e2e.txt")
        info.size = len(content)
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def main():
    if len(sys.argv) not in (2, 3):
        sys.stderr.write("usage: make_oci.py DIR [TAG]\n")
        return 2
    layout = sys.argv[1]
    tag = sys.argv[2] if len(sys.argv) == 3 else "latest"
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    layer = layer_tar()
    layer_digest, layer_size = put_blob(layout, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "ci/e2e/make_oci.py"}],
    }
    config_digest, config_size = put_blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = put_blob(
        layout, json.dumps(manifest, sort_keys=True).encode()
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
