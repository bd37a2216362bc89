#!/usr/bin/env python3
"""Write tests/fixtures/photos/: ten everyday photographs from scikit-image's bundled sample
data (public domain or CC0; tests/fixtures/photos/ATTRIBUTION.md), each shrunk to at most
256 px and saved as JPEG, for the out-of-distribution measurements and tests.

    pip download scikit-image --no-deps -d /tmp/skd && cd /tmp/skd && unzip -q scikit_image-*.whl 'skimage/data/*'
    python3 tools/make_photo_fixtures.py /tmp/skd/skimage/data tests/fixtures/photos
"""
import os
import sys

from PIL import Image

NAMES = {
    "astronaut.png": "astronaut.jpg", "chelsea.png": "cat.jpg", "coffee.png": "coffee.jpg",
    "rocket.jpg": "rocket.jpg", "hubble_deep_field.jpg": "hubble_deep_field.jpg",
    "retina.jpg": "retina_fundus.jpg", "camera.png": "camera.jpg", "grass.png": "grass.jpg",
    "gravel.png": "gravel.jpg", "brick.png": "brick.jpg",
}


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for name, target in NAMES.items():
        im = Image.open(os.path.join(src, name))
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        im.thumbnail((256, 256), Image.LANCZOS)
        im.save(os.path.join(out, target), quality=88)
        print(target, im.size, im.mode)


if __name__ == "__main__":
    main()
