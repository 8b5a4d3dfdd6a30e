"""Which tar members of a webdataset sample are read, and how: an allow-list of explicit decoders.

webdataset's default decoder applies its basic handlers to every member of a sample, and those
unpickle ``.pyd``/``.pkl``/``.pickle`` members (and ``torch.load`` ``.pth`` ones): a shard
downloaded from anywhere could run code on every node that reads it. Here only the members the
pipelines use are kept (the images, the ``.txt`` caption, the ``.json`` metadata), each decoded
by its own handler; every other member is dropped while the tar is grouped into samples, before
any decoding, so a shard with extra members reads exactly as the same shard without them.
Nothing here ever unpickles.
"""

import io
import json

# The image members OpenCLIP's pipelines rename to "image" (``wds.rename(image="jpg;png;jpeg;webp")``).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def decode_image(data: bytes):
    """An RGB PIL image (PIL reads the format from the bytes, not from the extension)."""
    from PIL import Image

    with io.BytesIO(data) as stream:
        image = Image.open(stream)
        image.load()
        return image.convert("RGB")


def decode_text(data: bytes) -> str:
    return data.decode("utf-8")


def decode_json(data: bytes):
    return json.loads(data)


DECODERS = {"txt": decode_text, "json": decode_json, **{ext: decode_image for ext in IMAGE_EXTENSIONS}}
ALLOWED_MEMBERS = frozenset(DECODERS)


def decode_sample(sample: dict) -> dict:
    """The sample with its allowed members decoded and every other member dropped; the
    ``__key__``/``__url__`` metadata is kept as is."""
    out = {}
    for name, value in sample.items():
        if name.startswith("__"):
            out[name] = value
        elif name in DECODERS:
            out[name] = DECODERS[name](value) if isinstance(value, (bytes, bytearray)) else value
    return out


def decode_stage(handler):
    """A webdataset pipeline stage decoding each sample with ``decode_sample``; a sample that
    fails goes to ``handler(exn)``, which returns True to skip it (webdataset's convention)."""

    def _decode(src):
        for sample in src:
            try:
                yield decode_sample(sample)
            except Exception as exn:  # noqa: BLE001 - the handler decides (log and skip, or raise)
                if handler(exn):
                    continue
                raise

    return _decode
